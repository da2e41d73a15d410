// End-to-end speed of a checkpoint through infer_forward (infer/forward.h), against the machine's
// limits measured in the same run (bench/machine.h).
//
// The machine's limit is measured first, then the checkpoint is loaded and one byte of every page
// of every weight a forward reads is touched (a loaded model: the timings then include no page
// faults as long as the model fits in memory). Major page faults during the timed part are
// counted and reported: more than none means weights were read back from disk.
//
// Decode: a prompt of a few random token ids in one forward, one untimed greedy step, then
// `tokens` greedy single-token steps, each timed; tokens/s = steps / their total time.
//
// The decode limit is bandwidth: a step must read every weight it uses once. Bytes per token:
// attention (projections, norms, biases), the dense FFN of dense layers, per MoE layer the
// router, the shared expert(s) and the distinct experts the step actually chose (captured through
// RouteCapture), the final norm and lm_head, one embedding row, and the KV cache up to the
// step's position. Two counts:
//  - engine: at the dtype the engine holds them in memory. Only routed experts run from their
//    stored BF16 / Q8_0 / Q4_0 rows; every other quantized matrix was dequantized to fp32 at load
//    (model/weights.h), so it is read as fp32.
//  - stored: at the checkpoint's dtypes (what an engine running every matrix as stored would read).
// limit tokens/s = measured DRAM read bandwidth / bytes per token, and the fraction reached.
//
// Prefill: one forward of `tokens` random ids from an empty cache (logits of the last position
// only), timed `reps` times after one untimed run; reported against sgemm GFLOP/s with
// flops = 2 x (weights used per token) x tokens + the causal attention products.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "bench/machine.h"

namespace moe {

struct ExpertWeights;
// Bytes one routed expert's matrices and biases occupy as the engine holds them (D model width,
// F expert width): what running it reads.
double expert_bytes(const ExpertWeights& ew, int64_t D, int64_t F);

struct TokenBytes {
  double attention = 0, dense_ffn = 0, router = 0, shared = 0, experts = 0, lm_head = 0,
         embed = 0, kv_cache = 0;
  double total() const {
    return attention + dense_ffn + router + shared + experts + lm_head + embed + kv_cache;
  }
};

struct ModelBenchInfo {
  std::string dir, model_type, quant_type;  // quant_type: moe.quant_type of the checkpoint, or ""
  int64_t n_params = 0, weight_bytes = 0;   // as model_load counts them
  int64_t resident_bytes = 0;               // RSS after touching the weights
  bool fits_in_memory = true;               // resident_bytes < MemAvailable before loading
};

struct DecodeBenchOptions {
  int tokens = 64;
  int prompt = 4;
  uint64_t seed = 1;
  int64_t bw_bytes = 0;  // 0: default_bandwidth_bytes
  int bw_reps = 5;
  bool quick = false;
  std::function<void(const std::string&)> log;
};

struct DecodeBenchResult {
  ModelBenchInfo model;
  MachineInfo machine;
  BandwidthResult bw;
  bool quick = false;
  int tokens = 0, prompt = 0;
  double seconds = 0.0;   // total of the timed steps
  double tok_s = 0.0;
  TimeStats step;
  double experts_per_layer = 0.0;  // distinct experts chosen per MoE layer and step
  TokenBytes engine, stored;       // per token, averaged over the steps
  double limit_tok_s = 0.0, limit_tok_s_stored = 0.0;
  double frac = 0.0;               // tok_s / limit_tok_s
  int64_t major_faults = 0;        // during the timed steps
  CpuOthers cpu;                   // other processes' share of the CPUs during the timed steps
  double load_end = 0.0;
};

struct PrefillBenchOptions {
  int tokens = 512;
  int reps = 2;
  uint64_t seed = 1;
  int gemm_n = 2048;
  bool quick = false;
  std::function<void(const std::string&)> log;
};

struct PrefillBenchResult {
  ModelBenchInfo model;
  MachineInfo machine;
  GemmResult gemm;
  bool quick = false;
  int tokens = 0;
  TimeStats time;
  double tok_s = 0.0;   // tokens / median time
  double flops = 0.0;   // one forward
  double gflops = 0.0, frac_sgemm = 0.0;
  int64_t major_faults = 0;  // during the timed forwards
  CpuOthers cpu;             // other processes' share of the CPUs during the timed forwards
  double load_end = 0.0;
};

DecodeBenchResult decode_bench_run(const std::string& dir, const DecodeBenchOptions& opt);
PrefillBenchResult prefill_bench_run(const std::string& dir, const PrefillBenchOptions& opt);

// Reports as JSON text and Markdown.
std::string decode_bench_json(const DecodeBenchResult& r);
std::string decode_bench_markdown(const DecodeBenchResult& r);
std::string prefill_bench_json(const PrefillBenchResult& r);
std::string prefill_bench_markdown(const PrefillBenchResult& r);

}  // namespace moe
