// One MoE layer of a model at its real shapes, driven through the engine's moe_forward
// (moe/moe_layer.h) with one FfnScratch allocated once: validated against a double-precision
// reference, then timed per token count with cold and warm weights, and reported against the
// machine's limits measured in the same run (bench/machine.h).
//
// Weights are random and built in memory: routed experts stored as `type` (f32, or raw BF16 /
// Q8_0 / Q4_0 rows made with quant/quant.h, as a checkpoint's experts stay in the memory map; a
// matrix whose input axis is not a multiple of 32 stays fp32 under the block types, as with
// `moe quantize`); the router (and its biases) and the shared expert(s) in fp32, which is how the
// engine holds them after loading any checkpoint. Values N(0, 0.02) (random_normal_row of
// model/checkpoint_write.h), expert and router biases too where the architecture has them;
// inputs N(0, 1), the scale of a normed hidden state.
//
// Validation, before any timing: moe_forward on the first `validate_tokens` inputs against a
// reference that takes the experts moe_forward chose, dequantizes their weights to fp32
// (dequantize_row) and computes the expert sum (SwiGLU, or gpt-oss's clamped variant, with
// biases) and the shared expert in double. For token-choice routers the choice itself is checked
// too: the top-K of router logits computed in double must be the same experts with the same
// weights (within 1e-5). Relative error = ||y - y_ref||_2 / ||y_ref||_2 over all tokens.
//  - path "dot" (segments of at most quant_dot_max_tokens tokens, as in decode; fp32 experts run
//    through BLAS): tolerance 1e-4 for f32 and bf16 (the weights are exact; only fp32 sums
//    differ). For q8_0 / q4_0 the dot kernels quantize each expert's inputs (x for gate/up, the
//    activation h for down) to Q8_0: each element is rounded to a step of amax/127 of its 32-value
//    block, a relative rms error of about amax / (127 sqrt(12) rms), ~0.5% for Gaussian inputs and
//    ~1% for the heavier-tailed h; through the random matrices these add to ~1-2% of the output,
//    so the tolerance is 5%. They are also compared with a reference that rounds those same
//    activations to Q8_0 (the kernels' exact semantics in real arithmetic), tolerance 3e-3: what
//    remains is fp32 summation and the rare element of h whose fp32 and double values round to
//    different Q8_0 steps.
//  - path "gemm" (quant_dot_max_tokens = 0: every raw expert dequantized to fp32 for sgemm, as in
//    prefill; raw types only): tolerance 1e-4 against the plain reference.
// A failed check throws MoeError; nothing is timed.
//
// Timing: per token count T, moe_forward on the first T inputs (the same each call), repeated
// until min_time_s and min_reps (median reported).
//  - warm: the same weights every call, as peers measure; at small T they sit in the cache.
//  - cold: `slots` independent copies of what a call reads (router, shared expert and the experts
//    the T inputs select), used in rotation, so between two uses of the same bytes at least
//    slots x (bytes per call) >= cold_target_bytes (default max(4 x LLC, 1 GiB)) are read: the
//    weights come from DRAM, as in decoding a model much larger than the cache. Extra copies are
//    limited to cold_max_bytes and to half the memory available; when that stops short of the
//    target the case reports its actual reuse distance.
//
// Per case: µs per call; GFLOP/s with flops = 2 T K 3 D F (routed experts; assignments instead
// of T K for routers with a variable count) + 2 T 3 D Fs (shared) + 2 T D E (router) + 2 T D (shared
// gate); GB/s over the bytes a call must read = distinct experts selected x their bytes + router +
// shared; these as fractions of the measured DRAM read bandwidth and sgemm GFLOP/s; and the
// fraction of the roofline, max(bytes / bandwidth, flops / sgemm rate) / time.
//
// Legend: T tokens, D hidden size, F expert width, Fs shared width, E experts, K top-k.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/machine.h"
#include "model/config.h"
#include "quant/quant.h"

namespace moe {

struct LayerBenchOptions {
  QType type = QT_Q4_0;
  std::vector<int> tokens = {1, 8, 64, 512};
  bool cold = true, warm = true;
  uint64_t seed = 1;
  int validate_tokens = 4;
  double min_time_s = 1.0;  // per case
  int min_reps = 3;
  int max_reps = 100000;
  int64_t cold_target_bytes = 0;               // 0: max(4 x LLC, 1 GiB)
  int64_t cold_max_bytes = int64_t{4} << 30;   // extra copies at most
  int64_t bw_bytes = 0;                        // bandwidth probe buffer; 0: default
  int bw_reps = 5;
  int gemm_n = 2048;
  bool quick = false;  // recorded in the report (tests: tiny probes, numbers not meaningful)
  int dot_max_tokens = -1;  // FfnScratch's dot thresholds for the timed calls; -1: default
  std::function<void(const std::string&)> log;  // progress lines, may be empty
};

struct LayerCheck {
  std::string path;         // "dot" or "gemm"
  int tokens = 0;
  double rel_err = 0.0;     // against the plain reference
  double tol = 0.0;
  double rel_err_q8 = -1.0; // against the Q8_0-activation reference (dot path, block types)
  double tol_q8 = 0.0;
  bool routing_checked = false;
  bool ok = false;
};

struct LayerCase {
  int tokens = 0;
  bool cold = false;
  int slots = 1;              // weight copies in rotation (cold)
  int64_t reuse_bytes = 0;    // bytes read between two uses of the same weights
  TimeStats time;
  double flops = 0.0;
  int64_t bytes = 0;          // bytes a call must read
  int experts_touched = 0;    // distinct experts selected
  int dot_experts = 0;        // of those, run through the dot kernels (the rest: sgemm)
  double gflops = 0.0, gbps = 0.0;
  double frac_dram = 0.0, frac_sgemm = 0.0, frac_roof = 0.0;
  CpuOthers cpu;              // other processes' share of the CPUs while timing
};

struct LayerBenchResult {
  std::string model, config_path;
  QType type = QT_F32;
  int D = 0, F = 0, E = 0, K = 0, Fs = 0;
  bool shared_gate = false, expert_bias = false, router_bias = false;
  std::string act, router;
  int64_t expert_bytes = 0;   // one routed expert as stored
  int64_t dense_bytes = 0;    // router + shared expert(s)
  int64_t layer_bytes = 0;    // all experts + dense
  MachineInfo machine;
  BandwidthResult bw;
  GemmResult gemm;
  bool quick = false;
  double load_end = 0.0;      // load average after the last case
  CpuOthers cpu;              // other processes' share of the CPUs over the whole run
  std::vector<LayerCheck> checks;
  std::vector<LayerCase> cases;
};

// Runs the whole benchmark for the MoE layer of cfg (the config must have routed experts).
// Throws MoeError if the layer does not fit in the available memory or a check fails.
LayerBenchResult layer_bench_run(const ModelConfig& cfg, const std::string& model,
                                 const std::string& config_path, const LayerBenchOptions& opt);

// The report as JSON text, as a Markdown document, and the per-case table alone (Markdown).
std::string layer_bench_json(const LayerBenchResult& r);
std::string layer_bench_markdown(const LayerBenchResult& r);
std::string layer_bench_table(const LayerBenchResult& r);

}  // namespace moe
