#include "serve/metrics.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

#include "bench/model_bench.h"

namespace moe {

namespace {
const double kRateWindow = 10.0;  // seconds of steps behind the tokens/s gauge

void line(std::string* out, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void line(std::string* out, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  *out += buf;
  *out += '\n';
}

void header(std::string* out, const char* name, const char* type, const char* help) {
  line(out, "# HELP %s %s", name, help);
  line(out, "# TYPE %s %s", name, type);
}
}  // namespace

void metrics_init(ServeMetrics* m, const Model& model, int slots) {
  const ModelConfig& c = model.cfg;
  m->slots = slots;
  m->routed.assign(c.n_layers, {});
  m->bytes_per_expert.assign(c.n_layers, 0.0);
  for (int l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe[l]) continue;
    m->routed[l].assign(c.n_experts, 0);
    m->bytes_per_expert[l] = expert_bytes(model.layers[l].experts[0], c.hidden, c.expert_ffn);
  }
  m->seen.assign(std::max(c.n_experts, 1), 0);
}

void metrics_count_request(ServeMetrics* m, const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> g(m->mu);
  ++m->requests[{endpoint, status}];
}

void metrics_step(ServeMetrics* m, const RouteCapture& cap, int tokens, int generated, double now) {
  std::lock_guard<std::mutex> g(m->mu);
  ++m->steps;
  m->step_tokens += tokens;
  m->generated_tokens += generated;
  for (size_t l = 0; l < m->routed.size() && l < cap.idx.size(); ++l) {
    std::vector<uint64_t>& row = m->routed[l];
    if (row.empty()) continue;
    std::fill(m->seen.begin(), m->seen.end(), 0);
    int distinct = 0;
    for (int32_t e : cap.idx[l]) {
      if (e < 0 || e >= static_cast<int32_t>(row.size())) continue;  // expert-choice padding
      ++row[e];
      distinct += !m->seen[e];
      m->seen[e] = 1;
    }
    m->expert_bytes += distinct * m->bytes_per_expert[l];
    if (tokens == generated) m->decode_expert_bytes += distinct * m->bytes_per_expert[l];
  }
  if (tokens == generated) m->decode_tokens += tokens;
  if (generated > 0) m->recent.emplace_back(now, generated);
  while (!m->recent.empty() && m->recent.front().first < now - kRateWindow) m->recent.pop_front();
}

std::string metrics_render(ServeMetrics* m, double now) {
  std::lock_guard<std::mutex> g(m->mu);
  std::string o;
  header(&o, "moe_requests_total", "counter", "HTTP requests by endpoint and status");
  for (const auto& kv : m->requests)
    line(&o, "moe_requests_total{endpoint=\"%s\",status=\"%d\"} %llu", kv.first.first.c_str(),
         kv.first.second, static_cast<unsigned long long>(kv.second));
  header(&o, "moe_prompt_tokens_total", "counter", "prompt tokens of admitted requests");
  line(&o, "moe_prompt_tokens_total %llu", static_cast<unsigned long long>(m->prompt_tokens));
  header(&o, "moe_prompt_tokens_cached_total", "counter", "prompt tokens reused from the prefix cache");
  line(&o, "moe_prompt_tokens_cached_total %llu", static_cast<unsigned long long>(m->cached_tokens));
  header(&o, "moe_generated_tokens_total", "counter", "generated tokens");
  line(&o, "moe_generated_tokens_total %llu", static_cast<unsigned long long>(m->generated_tokens));
  header(&o, "moe_forward_steps_total", "counter", "batched forward steps");
  line(&o, "moe_forward_steps_total %llu", static_cast<unsigned long long>(m->steps));
  header(&o, "moe_forward_tokens_total", "counter", "tokens run through batched forward steps");
  line(&o, "moe_forward_tokens_total %llu", static_cast<unsigned long long>(m->step_tokens));
  while (!m->recent.empty() && m->recent.front().first < now - kRateWindow) m->recent.pop_front();
  uint64_t recent = 0;
  for (const auto& r : m->recent) recent += r.second;
  header(&o, "moe_generated_tokens_per_second", "gauge", "generated tokens/s over the last 10 s");
  line(&o, "moe_generated_tokens_per_second %.3f", recent / kRateWindow);
  header(&o, "moe_queue_depth", "gauge", "requests waiting for a slot");
  line(&o, "moe_queue_depth %d", m->queue_depth);
  header(&o, "moe_busy_sequences", "gauge", "sequences holding a KV slot");
  line(&o, "moe_busy_sequences %d", m->busy);
  header(&o, "moe_slots", "gauge", "KV cache slots (--parallel)");
  line(&o, "moe_slots %d", m->slots);
  header(&o, "moe_expert_bytes_read_total", "counter",
         "bytes of the distinct routed experts each forward step ran");
  line(&o, "moe_expert_bytes_read_total %.0f", m->expert_bytes);
  header(&o, "moe_expert_bytes_read_decode_total", "counter",
         "expert bytes read by pure decode steps (one token per sequence, no prompt)");
  line(&o, "moe_expert_bytes_read_decode_total %.0f", m->decode_expert_bytes);
  header(&o, "moe_decode_step_tokens_total", "counter", "tokens of pure decode steps");
  line(&o, "moe_decode_step_tokens_total %llu", static_cast<unsigned long long>(m->decode_tokens));
  header(&o, "moe_expert_routed_tokens_total", "counter", "tokens routed to each expert");
  for (size_t l = 0; l < m->routed.size(); ++l)
    for (size_t e = 0; e < m->routed[l].size(); ++e)
      line(&o, "moe_expert_routed_tokens_total{layer=\"%zu\",expert=\"%zu\"} %llu", l, e,
           static_cast<unsigned long long>(m->routed[l][e]));
  header(&o, "moe_expert_load_max_over_mean", "gauge",
         "per MoE layer: the busiest expert's routed tokens over the mean (1 = balanced)");
  for (size_t l = 0; l < m->routed.size(); ++l) {
    const std::vector<uint64_t>& row = m->routed[l];
    if (row.empty()) continue;
    uint64_t sum = 0, mx = 0;
    for (uint64_t x : row) { sum += x; mx = std::max(mx, x); }
    const double mean = static_cast<double>(sum) / row.size();
    line(&o, "moe_expert_load_max_over_mean{layer=\"%zu\"} %.4f", l, mean > 0 ? mx / mean : 0.0);
  }
  return o;
}

}  // namespace moe
