// Training forward and backward of one MoE FFN block, on the trainable routers of router.h.
//
// Forward: route; sort the kept assignments by expert into contiguous segments; run each expert's
// SwiGLU only on its segment; combine with the routing weights; add the shared expert(s). Every
// activation the backward needs is saved in MoeActs, allocated once for N_max tokens.
// Backward: mirrors it, in reverse. Parameter gradients accumulate, dx is overwritten.
//
// Legend: N tokens, D model width, E experts, K experts per token, F expert width, S shared width,
// A assignments.
#pragma once

#include <cstdint>
#include <vector>

#include "model/weights.h"
#include "moe/router.h"

namespace moe {

// Coefficients of the balancing and stability losses, and the capacity policy.
struct MoeLossSpec {
  float aux = 0.01f;       // Switch aux loss alpha (Switch Transformer's 1e-2)
  float z = 0.001f;        // router z-loss beta (ST-MoE's 1e-3)
  float seq_aux = 0.0f;    // DeepSeek sequence-wise aux loss alpha
  float device = 0.0f;     // device-level balance loss alpha
  int n_devices = 1;       // expert groups for the device-level loss
  float capacity_factor = 0.0f;  // 0 = dropless
};

// The loss values of one forward call (already multiplied by their coefficients).
struct MoeLosses {
  double aux = 0.0, z = 0.0, seq_aux = 0.0, device = 0.0;
  double total() const { return aux + z + seq_aux + device; }
};

struct MoeActs {
  int N = 0;
  Routing routing;
  std::vector<float> logits;    // (N, E) router logits
  std::vector<float> nlogits;   // (N, E) noise logits (noisy top-k)
  std::vector<int32_t> off;     // (E + 1) segment offsets of the kept assignments
  std::vector<int32_t> cursor;  // (E) fill positions while sorting
  std::vector<int32_t> order;   // (A) assignment at each sorted slot
  std::vector<int32_t> slot;    // (A) sorted slot of each kept assignment, -1 if dropped
  std::vector<float> xs;        // (A, D) gathered inputs
  std::vector<float> g, u;      // (A, F) gate and up pre-activations
  std::vector<float> act;       // (A, F) silu(g) * u
  std::vector<float> ys;        // (A, D) expert outputs
  std::vector<float> sg, su, sact;  // (N, S) shared expert
  std::vector<float> sy;        // (N, D) shared expert output before its gate
  std::vector<float> sgate;     // (N) shared gate logits
  // backward scratch
  std::vector<float> dw;        // (A)
  std::vector<float> dsgate;    // (N) shared gate logit gradients
  std::vector<float> dys;       // (A, D)
  std::vector<float> dact, dg, du;  // (max(A, N), max(F, S))
  std::vector<float> dxs;       // (A, D)
  std::vector<float> dlogits;   // (N, E)
  std::vector<float> dnlogits;  // (N, E)
  std::vector<float> tmp;       // (N, D)
};

void moe_acts_init(MoeActs* a, const ModelConfig& c, int N_max);

// out (N, D) = MoE(x (N, D)). ids (N) are the token ids (hash routing); seq_len splits the N tokens
// into sequences for the sequence-wise loss. Returns the balancing losses (zero when their
// coefficient is zero).
// w_noise (E, D): the noisy top-k router's noise projection, null for other routers.
MoeLosses moe_train_forward(float* out, MoeActs* a, const ModelConfig& c, const LayerWeights& w,
                            const float* w_noise, const MoeLossSpec& ls, const float* x,
                            const int32_t* ids, int N, int seq_len, uint64_t seed, bool train);

// dx (N, D) from dout (N, D); grads (same structure as the weights, pointing into a gradient
// arena) accumulate. loss_scale multiplies the balancing losses' gradients (e.g. 1/accum steps).
// g_noise (E, D) receives the noise projection's gradient (noisy top-k only).
void moe_train_backward(float* dx, MoeActs* a, const ModelConfig& c, const LayerWeights& w,
                        const float* w_noise, const LayerWeights& grads, float* g_noise,
                        const MoeLossSpec& ls, const float* x, const float* dout, int seq_len,
                        float loss_scale);

}  // namespace moe
