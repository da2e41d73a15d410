// The MoE layer: one pipeline for inference, training and routing analysis.
//
//   router logits -> route (router.h) -> dispatch plan (dispatch.h) -> dispatch
//     -> grouped expert FFN (experts.h) -> combine -> + shared expert(s)
//
// moe_layer_forward runs it; with a state allocated for training it keeps every activation the
// backward needs, and moe_layer_backward mirrors it stage by stage (parameter gradients
// accumulate, dx is overwritten). moe_forward (inference) and moe_train_forward / backward
// (moe_train.h) are this one function with their arguments fixed.
//
// Routing follows config.router (router_forward, the one implementation of every router kind).
// Inference routes with train = false and no capacity (dropless):
//  - noisy top-k: no noise; the top K of the clean logits, softmax over the K selected.
//  - hash: experts are a fixed function of the token id (the ids are needed).
//  - random: uniform draws keyed on (router_layer_seed(0, layer), position), as the training
//    evaluation of a sequence starting at position 0; a decoded token draws what it would in a
//    full-sequence call.
//  - expert choice: each expert takes its top-C tokens among the T tokens of ONE call
//    (C = ceil(T*K/E), at most floor(T*K/E), at least 1; router.h), so a token gets a variable
//    number of experts (0 to E) and its output depends on the other tokens of the call: it is
//    non-causal, and decoding (T = 1) differs from a full-sequence forward.
//  - base: each token's argmax logit (top-1); sinkhorn and reinforce: the top K of the plain
//    scores. Their training-time balancing (auction, Sinkhorn) and sampling are off.
// Training adds the router noise, capacity dropping, the balancing losses, BASE's balanced
// assignment, Sinkhorn's balanced selection and REINFORCE's sampling (router.h).
//
// Legend: N (or T) tokens, D model width, F expert width, S shared width, E experts, K experts
// per token, A assignments.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "dist/comm.h"
#include "moe/dispatch.h"
#include "moe/ep_dispatch.h"
#include "ops/experts.h"
#include "ops/router.h"
#include "ops/linear.h"

namespace moe {

// Coefficients of the balancing and stability losses, and the capacity policy (router.h defines
// each loss).
struct MoeLossSpec {
  float aux = 0.01f;       // Switch aux loss alpha (Switch Transformer's 1e-2)
  float z = 0.001f;        // router z-loss beta (ST-MoE's 1e-3)
  float seq_aux = 0.0f;    // DeepSeek sequence-wise aux loss alpha
  float device = 0.0f;     // device-level balance loss alpha
  int n_devices = 1;       // expert groups (devices) for the device-level and communication losses
  float comm = 0.0f;       // DeepSeek-V2 communication balance loss alpha
  int comm_devices = 0;    // M of the communication loss: devices a token may reach (0: min(K, D))
  float capacity_factor = 0.0f;  // 0 = dropless
  float rl_entropy = 0.0f; // REINFORCE routing's entropy bonus (router_reinforce_grad)
};

// The loss values of one forward call (already multiplied by their coefficients).
struct MoeLosses {
  double aux = 0.0, z = 0.0, seq_aux = 0.0, device = 0.0, comm = 0.0;
  double total() const { return aux + z + seq_aux + device + comm; }
};

// The buffers of one MoE layer for calls of up to N_max tokens, allocated once. A_max =
// max(Nr_max * K, E) assignments (expert choice takes at least one token per expert), where
// Nr_max, the most tokens routed together, is N_max in one process.
//
// Expert parallelism (moe_state_enable_ep): the layer's experts split over the ranks of a
// communicator (ep_dispatch.h), and the tokens are shared in one of two ways:
//  - replicated (inference): every rank runs the same N tokens. Each routes all of them, sends the
//    rows of its own share (a contiguous 1/P of the tokens) to the experts' ranks, runs the shared
//    expert on its share, and the ranks all-gather the shares' outputs.
//  - data-parallel (training): each rank has its own N tokens. The ranks all-gather the router
//    logits (and token ids, noise logits), so that every rank routes the whole batch exactly as
//    one process would (capacity, expert choice, balancing losses, bias statistics: all global),
//    then each dispatches its own tokens' rows. The routing group may be larger than the
//    expert-parallel one (--ep: groups of experts, data parallelism across them); the routing
//    still covers every rank's tokens. Nr_max = N_max * (ranks of the routing group).
struct MoeState {
  int N_max = 0;
  int N = 0;           // this rank's tokens of the last forward
  int Nr = 0;          // tokens routed in the last forward (every rank's, data-parallel)
  int t0 = 0;          // the first of this rank's tokens among them
  bool train = false;  // activations kept for the backward, backward buffers allocated
  Dispatcher* dispatcher = nullptr;  // local_dispatcher() unless expert-parallel

  // Expert parallelism; ep == nullptr in one process. ep_route: the ranks whose tokens route
  // together (ep, or a larger data-parallel group holding several copies of the experts).
  Comm* ep = nullptr;
  Comm* ep_route = nullptr;
  bool ep_replicated = false;
  std::shared_ptr<EpDispatcher> ep_dispatcher;
  DispatchPlan own;             // the plan of this rank's tokens (plan covers every routed token)
  std::vector<int64_t> ep_tokens;  // (Pr) tokens of each rank of ep_route in the last call
  std::vector<int64_t> ep_bytes;   // (Pr) scratch byte counts of the gathers
  std::vector<float> lbuf;      // (N_max, E) this rank's logits before the gather
  std::vector<float> adv_all;   // (Nr_max) REINFORCE advantages of every rank's tokens (training)
  std::vector<int32_t> gids;    // (Nr_max) every rank's token ids (data-parallel)

  std::vector<float> logits;   // (Nr_max, E) router logits, bias included
  std::vector<float> nlogits;  // (Nr_max, E) noise logits (noisy top-k, training)
  Routing routing;             // the last call's assignments, scores and counts
  // The last call's (N, K) experts and weights of each token. For expert choice (a variable
  // number of experts per token), each token's K highest-weight experts (ties: lower expert),
  // padded with expert -1 and weight 0.
  std::vector<int32_t> idx;    // (Nr_max, K)
  std::vector<float> w;        // (Nr_max, K)
  DispatchPlan plan;
  ExpertSegments seg;          // the experts this process ran in the last call
  ExpertBuffers ex;
  // Shared expert(s); hg, hu are also the dense MLPs' scratch at inference.
  std::vector<float> hg, hu;   // (N_max, max(S, dense F)) gate / up (act in hg at inference)
  std::vector<float> sact;     // (N_max, S) shared expert activation (training)
  std::vector<float> sy;       // (N_max, D) shared expert output before its gate
  std::vector<float> sgate;    // (N_max) shared gate logits
  LinearScratch lin;           // shared expert(s) and dense MLPs with raw matrices
  // Hot-expert cache (moe/expert_cache.h; inference in one process): the caller sets xcache and
  // the layer index before each call; the experts then run from xw, the layer's experts with the
  // cached ones pointing at their slots.
  ExpertCache* xcache = nullptr;
  int xcache_layer = -1;
  std::vector<ExpertWeights> xw;  // (E)
  // Backward.
  std::vector<float> dw;       // (A_max) combine-weight gradients
  std::vector<float> dlogits;  // (Nr_max, E)
  std::vector<float> dnlogits; // (Nr_max, E)
  std::vector<float> dsgate;   // (N_max)
  std::vector<float> dsact, dsg, dsu;  // (N_max, S) shared expert
  std::vector<float> tmp, tmp2;        // (N_max, D)
};

void moe_state_init(MoeState* s, const ModelConfig& c, int N_max, bool train);
// Makes the layer expert-parallel over comm (a no-op for one rank): re-sizes the routing and
// expert buffers for the tokens of every rank and installs the all-to-all dispatcher. replicated:
// every rank calls with the same tokens (inference); else each its own (training), routed
// together with the tokens of every rank of `route` (null: comm; else a group whose ranks are
// consecutive blocks of comm's size, each block one expert-parallel group).
void moe_state_enable_ep(MoeState* s, const ModelConfig& c, Comm* comm, bool replicated,
                         Comm* route = nullptr);

// The arguments of one call beyond its inputs.
struct MoeCall {
  const int32_t* ids = nullptr;  // (N) token ids, needed by hash routing
  int64_t pos = 0;               // index of the first token (random and noise draws)
  uint64_t seed = 0;             // the layer's router seed (router_layer_seed)
  bool train = false;            // router noise on
  const MoeLossSpec* losses = nullptr;  // null: no losses, dropless
  int seq_len = 0;               // tokens per sequence (sequence-wise loss)
  const float* w_noise = nullptr;  // (E, D) noisy top-k's noise projection
  const float* adv = nullptr;    // (N) REINFORCE advantages (backward; router_reinforce_grad)
};

// out (N, D) = MoE(x (N, D)). Returns the balancing losses (zero without call.losses).
MoeLosses moe_layer_forward(float* out, MoeState* s, const ModelConfig& c, const LayerWeights& lw,
                            const float* x, int N, const MoeCall& call);

// dx (N, D) from dout (N, D) after a forward on a training state with the same call; grads
// accumulate (same structure as the weights, pointing into a gradient arena), g_noise (E, D)
// gets the noise projection's. loss_scale multiplies the balancing losses' gradients.
void moe_layer_backward(float* dx, MoeState* s, const ModelConfig& c, const LayerWeights& lw,
                        const LayerWeights& grads, float* g_noise, const float* x,
                        const float* dout, const MoeCall& call, float loss_scale);

// Inference names of the state and its set-up.
using FfnScratch = MoeState;
inline void ffn_scratch_init(FfnScratch* s, const ModelConfig& c, int T_max) {
  moe_state_init(s, c, T_max, false);
}
// The most tokens a raw expert whose matrices are of type t may have in a call and still run
// through the dot kernels.
inline int ffn_dot_max_tokens(const FfnScratch& s, QType t) {
  return expert_dot_max_tokens(s.ex, t);
}
// Sets both thresholds (0: every raw expert through dequantize + sgemm).
inline void ffn_set_dot_max_tokens(FfnScratch* s, int n) {
  s->ex.quant_dot_max_tokens = s->ex.bf16_dot_max_tokens = n;
}

// out (T, D) = down(silu(gate x) * up x). g, u: scratch of (T, F); ls: for raw matrices.
void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u,
                 LinearScratch* ls);

// Inference: out (T, D) = MoE(x) for x (T, D), dropless, without noise. ids (T): the tokens' ids
// (hash routing; MoeError if null then), else may be null. pos: position of the first token;
// seed: the layer's router seed (router_layer_seed(0, layer)). Leaves the routing in s->idx, s->w.
inline void moe_forward(float* out, const ModelConfig& c, const LayerWeights& lw, const float* x,
                        int T, FfnScratch* s, const int32_t* ids, int pos, uint64_t seed) {
  MoeCall call;
  call.ids = ids;
  call.pos = pos;
  call.seed = seed;
  moe_layer_forward(out, s, c, lw, x, T, call);
}

}  // namespace moe
