// The llamacpp_peer report: per model, type and token count, the median µs of both sides, the
// ratio (llama.cpp graph time / moe.cpp time: > 1 means moe.cpp is faster), GB/s and GFLOP/s of
// each, against the targets; as Markdown and as JSON beside it (written atomically).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/machine.h"

namespace peer {

struct CaseResult {
  int tokens = 0;
  bool cold = false;                           // weights flushed from the caches before each call
  int reps = 0;
  double moe_us = 0.0, peer_us = 0.0;          // medians
  double moe_us_min = 0.0, peer_us_min = 0.0;
  double rel_err = 0.0, tol = 0.0;             // outputs, relative L2
  double max_w_diff = 0.0;                     // combine weights, max relative difference
  int near_ties = 0;                           // selections that differ at a near tie
  int experts_touched = 0;
  int64_t bytes = 0;                           // bytes a call must read
  double flops = 0.0;
  double others_cpu = 0.0;                     // other processes' share of the CPUs while timed
};

struct ModelResult {
  std::string model, type;
  int rows_checked = 0;                        // rows dequantized bit-identically by both
  std::vector<std::string> placement;          // ggml buffer type of each weight
  std::vector<CaseResult> cases;
};

struct Report {
  moe::MachineInfo machine;
  moe::BandwidthResult bw;
  int threads = 0;
  double load_start = 0.0, load_end = 0.0;
  std::string omp_wait_policy, peer_desc, argv;
  std::vector<ModelResult> models;
};

// The target speed-up of moe.cpp over the graph at T tokens (issue 14): 1.2 at T = 1, else 1.5.
double target_ratio(int T);
std::string report_table(const Report& r);
// Writes path (Markdown) and path with .json in place of .md.
void write_report(const Report& r, const std::string& path);

}  // namespace peer
