// The grouped expert FFN of the MoE layer: each expert runs only on its segment of rows (the
// dispatched inputs of its tokens, dispatch.h), forward and backward side by side.
//
// FFN_e(x) = down_e(act(gate_e x + bg_e, up_e x + bu_e)) + bd_e, act = SwiGLU silu(g) * u, or
// gpt-oss's clamped form (u' + 1) * g' * sigmoid(alpha g') with g' = min(g, limit) and
// u' = clamp(u, -limit, limit). Biases exist for gpt-oss only.
//
// Weights may be fp32 or raw (BF16 / Q8_0 / Q4_0 rows from the memory map; model/weights.h).
// Raw experts with short segments (decode) go through the dot kernels of quant/quant.h, all such
// experts together in one OpenMP region split by (expert, block of output rows); the inputs of
// block-quantized matrices are quantized to Q8_0 once per row, the only numerical difference from
// running the dequantized weights in fp32. Longer segments (prefill) dequantize blocks of weight
// rows into a buffer allocated once and use sgemm; fp32 experts use BLAS. On the dot path every
// output element is computed by one thread in a fixed order, so results do not depend on the
// thread count. Training (save = true) needs fp32 weights and keeps g, u and the activation.
//
// Legend: R rows (kept assignments), D model width, F expert width, E experts.
#pragma once

#include <cstdint>
#include <vector>

#include "core/specs.h"
#include "quant/weight_view.h"

namespace moe {

// The rows a process holds for its experts: experts e0 .. e0 + n - 1, expert e0 + i in rows
// [off[i], off[i + 1]) (written by the dispatcher, moe/dispatch.h).
struct ExpertSegments {
  int e0 = 0, n = 0;
  const int32_t* off = nullptr;  // (n + 1)
};

struct ExpertBuffers {
  std::vector<float> xs;    // (R_max, D) dispatched inputs, by expert
  std::vector<float> g, u;  // (R_max, F) gate / up pre-activations (act in g when not saved)
  std::vector<float> act;   // (R_max, F) activations kept for the backward (training only)
  std::vector<float> ys;    // (R_max, D) expert outputs, by row

  // Raw experts: segments of at most quant_dot_max_tokens rows (bf16_dot_max_tokens for BF16)
  // run through the dot kernels, longer ones dequantize deq_rows weight rows at a time into wdeq
  // for sgemm. 64: about where the two cost the same for Q4_0 / Q8_0 experts (`moe bench layer
  // --dot-max-tokens`, OLMoE-1B-7B and Qwen3-30B-A3B, 2 threads, AVX-512 VNNI). BF16 rows go one
  // token at a time through dot_bf16_f32: at ~64 tokens per expert that took 1.4-1.7x sgemm's time.
  int quant_dot_max_tokens = 64;
  int bf16_dot_max_tokens = 16;
  int deq_rows = 0;
  std::vector<uint8_t> xq;           // (R_max, Q8X bytes of D) inputs as Q8X
  std::vector<uint8_t> hq;           // (R_max, Q8X bytes of F) activations as Q8X
  std::vector<float> wdeq;           // (deq_rows, max(D, F)) dequantized weight rows
  std::vector<int32_t> dot_experts;  // (E) experts of this call on the dot kernels

  // Backward (training only).
  std::vector<float> dys;             // (R_max, D) output gradients, by row
  std::vector<float> dact, dg, du;    // (R_max, F)
  std::vector<float> dxs;             // (R_max, D) input gradients, by row
  std::vector<float> tmp;             // (R_max, D) one segment's up-projection input gradient
};

// R_max rows of E experts; train allocates act and the backward buffers.
void expert_buffers_init(ExpertBuffers* b, const ExpertFfnSpec& f, int E, int R_max, bool train);

// The most rows a raw expert whose matrices are of type t may have and still use the dot kernels.
inline int expert_dot_max_tokens(const ExpertBuffers& b, QType t) {
  return qtype_is_block(t) ? b.quant_dot_max_tokens : b.bf16_dot_max_tokens;
}

// h (n) = act(g, u) elementwise; h may alias g.
void expert_act_forward(const ExpertFfnSpec& f, float* h, const float* g, const float* u,
                        int64_t n);
// dg, du (n) from dh (n) and the forward inputs g, u.
void expert_act_backward(const ExpertFfnSpec& f, float* dg, float* du, const float* dh,
                         const float* g, const float* u, int64_t n);

// ys rows = FFN_e(xs rows) for the experts of seg; experts: [E] all of the layer's experts.
// save: keep g, u and act for the backward.
void experts_forward(ExpertBuffers* b, const ExpertFfnSpec& f, const ExpertWeights* experts,
                     const ExpertSegments& seg, bool save);
// dxs rows from dys rows (after a saved forward); the experts' parameter gradients accumulate
// into grads ([E], the same structure as the weights, pointing into a gradient arena).
void experts_backward(ExpertBuffers* b, const ExpertFfnSpec& f, const ExpertWeights* experts,
                      const ExpertWeights* grads, const ExpertSegments& seg);

}  // namespace moe
