// Server metrics, rendered in the Prometheus text format (GET /metrics).
//
// Requests, prompt and generated tokens, forward steps, tokens/s over the last window, queue
// depth and busy sequences, and per MoE layer and expert the tokens routed to it by real traffic,
// with each layer's max/mean load over the served tokens, plus the expert bytes the batched steps
// read (each distinct expert of a step counted once, however many tokens it served).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "infer/forward.h"

namespace moe {

struct ServeMetrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, status) -> count
  uint64_t prompt_tokens = 0, prefilled_tokens = 0, cached_tokens = 0, generated_tokens = 0;
  uint64_t steps = 0, step_tokens = 0;
  double expert_bytes = 0.0;               // bytes of the distinct experts each step ran
  double decode_expert_bytes = 0.0;        // the same, over pure decode steps (no prompt tokens)
  uint64_t decode_tokens = 0;              // tokens of pure decode steps
  int queue_depth = 0, busy = 0, slots = 0;
  std::vector<std::vector<uint64_t>> routed;  // [L][E] tokens routed (empty rows: dense layers)
  std::vector<double> bytes_per_expert;       // [L] one expert's bytes
  std::deque<std::pair<double, uint64_t>> recent;  // (seconds, generated tokens) of recent steps
  std::vector<uint8_t> seen;                  // (E) scratch: experts of the current layer and step
};

void metrics_init(ServeMetrics* m, const Model& model, int slots);

void metrics_count_request(ServeMetrics* m, const std::string& endpoint, int status);

// After one batched step of `tokens` tokens that generated `generated` new tokens: routing from
// the step's capture, the bytes of the distinct experts it read. now: seconds on a steady clock.
void metrics_step(ServeMetrics* m, const RouteCapture& cap, int tokens, int generated, double now);

std::string metrics_render(ServeMetrics* m, double now);

}  // namespace moe
