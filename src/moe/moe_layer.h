// The feed-forward block: dense SwiGLU MLP and the sparse MoE layer.
//
// The MoE layer is computed sparsely: route each token to K experts, sort the (token, expert)
// assignments by expert into contiguous segments, run each expert only on its segment, then
// combine each token's K outputs with its routing weights (in k order, so results do not depend
// on threading).
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
};

void ffn_scratch_init(FfnScratch* s, const ModelConfig& c, int T_max);

// out (T, D) = down(silu(gate x) * up x). g, u: scratch of (T, F).
void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u);

// out (T, D) = MoE(x) for x (T, D): routed experts plus shared expert(s) if configured.
void moe_forward(float* out, const ModelConfig& c, const LayerWeights& lw, const float* x, int T,
                 FfnScratch* s);

}  // namespace moe
