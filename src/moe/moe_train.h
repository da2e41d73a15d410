// The training entry points of the MoE layer (moe_layer.h): the same pipeline on a state that
// keeps its activations, with router noise, capacity dropping and the balancing losses.
//
// Legend: N tokens, D model width, E experts.
#pragma once

#include <cstdint>

#include "model/weights.h"
#include "moe/moe_layer.h"

namespace moe {

using MoeActs = MoeState;
inline void moe_acts_init(MoeActs* a, const ModelConfig& c, int N_max) {
  moe_state_init(a, c, N_max, true);
}

// out (N, D) = MoE(x (N, D)). ids (N) are the token ids (hash routing); seq_len splits the N tokens
// into sequences for the sequence-wise loss. Returns the balancing losses (zero when their
// coefficient is zero). w_noise (E, D): the noisy top-k router's noise projection, else null.
// train turns the router noise on; capacity dropping follows ls.capacity_factor.
inline MoeLosses moe_train_forward(float* out, MoeActs* a, const ModelConfig& c,
                                   const LayerWeights& w, const float* w_noise,
                                   const MoeLossSpec& ls, const float* x, const int32_t* ids,
                                   int N, int seq_len, uint64_t seed, bool train) {
  MoeCall call;
  call.ids = ids;
  call.seed = seed;
  call.train = train;
  call.losses = &ls;
  call.seq_len = seq_len;
  call.w_noise = w_noise;
  return moe_layer_forward(out, a, c, w, x, N, call);
}

// dx (N, D) from dout (N, D); grads accumulate, dx is overwritten. loss_scale multiplies the
// balancing losses' gradients (e.g. 1/accum steps). g_noise (E, D) receives the noise
// projection's gradient (noisy top-k only). adv (N): REINFORCE routing's per-token advantages
// (router_reinforce_grad), else null.
inline void moe_train_backward(float* dx, MoeActs* a, const ModelConfig& c, const LayerWeights& w,
                               const float* w_noise, const LayerWeights& grads, float* g_noise,
                               const MoeLossSpec& ls, const float* x, const float* dout,
                               int seq_len, float loss_scale, const float* adv = nullptr) {
  MoeCall call;
  call.adv = adv;
  call.losses = &ls;
  call.seq_len = seq_len;
  call.w_noise = w_noise;
  moe_layer_backward(dx, a, c, w, grads, g_noise, x, dout, call, loss_scale);
}

}  // namespace moe
