// The feed-forward block: dense SwiGLU MLP and the sparse MoE layer.
//
// The MoE layer is computed sparsely: route each token to K experts, sort the (token, expert)
// assignments by expert into contiguous segments, run each expert only on its segment, then
// combine each token's K outputs with its routing weights (in k order, so results do not depend
// on threading).
//
// Experts kept raw (BF16, Q8_0, Q4_0; model/weights.h) run without conversion at load. Short
// segments (decode) go through the dot kernels of quant/quant.h, all such experts in one OpenMP
// region split by (expert, block of output rows); the inputs of block-quantized matrices are
// quantized to Q8_0 once per segment, which is the only numerical difference from running the
// dequantized weights in fp32. Long segments (prefill) dequantize blocks of weight rows into a
// buffer allocated once and use sgemm. Every output element is computed by one thread in a fixed
// order, so results do not depend on the thread count.
//
// Legend: T tokens, D model width, F expert width, E experts, K experts per token.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace moe {

constexpr int kMaxGroups = 64;  // largest n_group a router may use

// Routes T tokens. logits (T, E) are the router's outputs (bias included); e_bias (E) is the
// selection-only correction bias or null. Writes idx (T, K) and weights w (T, K).
// Ties between equal scores go to the lower expert index. work: (2E + kMaxGroups) floats.
void moe_route(const RouterSpec& r, const float* logits, const float* e_bias, int T, int E, int K,
               int32_t* idx, float* w, float* work);

// Buffers for one FFN call of up to T_max tokens, allocated once.
struct FfnScratch {
  int T_max = 0;
  std::vector<float> logits;    // (T_max, E)
  std::vector<int32_t> idx;     // (T_max, K)
  std::vector<float> w;         // (T_max, K)
  std::vector<int32_t> counts;  // (E + 1) segment offsets after the prefix sum
  std::vector<int32_t> cursor;  // (E) fill position per expert
  std::vector<float> route_work;  // (2E + kMaxGroups)
  std::vector<int32_t> order;   // (T_max * K) assignment t*K+k at each sorted slot
  std::vector<int32_t> slot;    // (T_max * K) sorted slot of assignment t*K+k
  std::vector<float> xs;        // (T_max * K, D) gathered inputs, sorted by expert
  std::vector<float> g;         // (T_max * max(K, 1), Fmax) gate activations
  std::vector<float> u;         // (T_max * max(K, 1), Fmax) up activations
  std::vector<float> ys;        // (T_max * K, D) expert outputs, sorted by expert
  std::vector<float> tmp;       // (T_max, D)
  std::vector<float> gate1;     // (T_max) shared-expert gate

  // Raw experts (BF16 / Q8_0 / Q4_0, see ExpertWeights). A segment of at most
  // quant_dot_max_tokens tokens runs row by row through the dot kernels (Q8_0 activations for the
  // block types); a longer one dequantizes deq_rows weight rows at a time into wdeq for sgemm.
  int quant_dot_max_tokens = 16;
  int deq_rows = 0;
  std::vector<uint8_t> xq;          // (T_max * K, q8 bytes of D) gathered inputs as Q8_0
  std::vector<uint8_t> hq;          // (T_max * K, q8 bytes of F) expert activations as Q8_0
  std::vector<float> wdeq;          // (deq_rows, max(D, F)) dequantized weight rows
  std::vector<int32_t> dot_experts; // (E) experts of this call that use the dot kernels
};

void ffn_scratch_init(FfnScratch* s, const ModelConfig& c, int T_max);

// out (T, D) = down(silu(gate x) * up x). g, u: scratch of (T, F).
void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u);

// out (T, D) = MoE(x) for x (T, D): routed experts plus shared expert(s) if configured.
void moe_forward(float* out, const ModelConfig& c, const LayerWeights& lw, const float* x, int T,
                 FfnScratch* s);

}  // namespace moe
