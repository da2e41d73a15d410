// Trainable routing: every router variant's forward (saving what its backward needs) and backward,
// capacity with token dropping, and the balancing and stability losses.
//
// Legend: N tokens, E experts, K experts per token, A assignments (N*K for token choice, E*C for
// expert choice), C per-expert capacity.
//
// Conventions (one per loss, written down):
//  - Switch aux loss (Megatron / DeepSeek normalisation): L = alpha * E * sum_i f_i * P_i with
//    f_i = (selections of i) / (N*K), P_i = mean_t p_t,i over the full distribution p (softmax, or
//    sigmoid scores normalised per token). Its minimum, under uniform routing, is alpha. Counts are
//    taken before capacity dropping. HF's load_balancing_loss_func is K times this value.
//  - z-loss (ST-MoE): L = beta * mean_t logsumexp(logits_t)^2.
//  - Sequence-wise aux loss (DeepSeek-V3): per sequence of T tokens, f_i = E/(K*T) * selections,
//    P_i = mean_t p_t,i; L = alpha * mean over sequences of sum_i f_i * P_i.
//  - Device-level loss (DeepSeekMoE): experts in D contiguous groups; f'_d = mean_{i in d} f_i,
//    P'_d = sum_{i in d} P_i with f_i = E/(K*N) * selections; L = alpha * sum_d f'_d * P'_d.
//  - Capacity C = ceil(N*K/E * capacity_factor) (Megatron); over capacity, an expert keeps its
//    highest-weight assignments (ties: lower token index); the others are dropped and the token's
//    residual carries on. capacity_factor 0 = dropless.
//  - Hash routing: token t with id x takes, with key = splitmix64(x ^ 0x5851f42d4c957f2d)
//    (core/rng.h; arithmetic modulo 2^64), the first K distinct values of
//    splitmix64(key + 0x632be59bd9b4e019 * n) mod E for n = 0, 1, 2, ..., each with weight
//    scale / K. Random routing draws the same way with key = splitmix64(seed ^ splitmix64(t0 + t)).
//    Noisy top-k's noise for (token t, expert e) is rng_normal(seed, (t0 + t) * E + e).
//  - Expert choice: C = ceil(N*K/E * max(capacity_factor, 1)), capped at floor(N*K/E) so that the
//    E*C assignments never exceed N*K (tokens get at most K experts on average), and at least 1
//    (with N*K < E, e.g. one decoded token, every expert takes the best token it has).
//  - BASE (Lewis et al. 2021; top-1 only): in training, a balanced assignment of the N tokens
//    maximising the summed logits, expert e taking floor(N/E) + (e < N mod E) tokens (exact
//    auction, assignment.h); at inference, each token's argmax logit. The weight is
//    scale * sigmoid(logit of the assigned expert) (BASE's gate; its (1 - gate) * x residual term
//    is left out: the layer's output is added to the residual stream already). score = sigmoid,
//    probs = sigmoids normalised per token.
//  - Sinkhorn (Megatron-Core's "sinkhorn" load balancing): in training, the top K of the
//    Sinkhorn-balanced matrix diag(d0) exp(logits) diag(d1) (assignment.h) select the experts;
//    the weights are the plain scores of the selected experts, sigmoid(logit) for K = 1 and
//    softmax(logits) for K > 1 (renormalised with norm_topk, times scale); the balancing is
//    selection-only, with no gradient. At inference, the top K of the plain scores.
//  - REINFORCE: in training, K experts sampled without replacement from p = softmax(logits)
//    (draw k of token t: u = rng_uniform(seed ^ 0x2545f4914f6cdd1d, (t0 + t) * K + k), the expert
//    where the cumulative mass of the experts not yet drawn first exceeds u times that mass); at
//    inference, the top K of p. Weights as softmax top-k: scale * p (renormalised with norm_topk).
//    Its score-function gradient: router_reinforce_grad below.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"  // rng_uniform, rng_normal, splitmix64
#include "core/specs.h"
#include "ops/assignment.h"

namespace moe {

struct Routing {
  int N = 0, E = 0, K = 0;
  int A = 0;         // assignments in use
  int capacity = 0;  // per-expert capacity, 0 = dropless
  int dropped = 0;   // assignments dropped by capacity
  std::vector<int32_t> tok;         // (A_max) token of each assignment
  std::vector<int32_t> expert;      // (A_max) expert of each assignment
  std::vector<float> w;             // (A_max) combine weight
  std::vector<char> kept;           // (A_max) 0 = dropped by capacity
  std::vector<float> score;         // (N, E) unbiased scores: softmax probabilities or sigmoids
  std::vector<float> probs;         // (N, E) distribution the balance losses use
  std::vector<float> noisy;         // (N, E) noisy logits H (noisy top-k)
  std::vector<float> noise;         // (N, E) dH/d(noise logit) = draw * softplus' (noisy top-k)
  std::vector<int32_t> sel_count;   // (E) selections per expert before dropping
  std::vector<int32_t> kept_count;  // (E) assignments per expert after dropping
  mutable std::vector<float> work;  // (4E + 64 + N) scratch, also used by the losses
  std::vector<int32_t> iwork;       // (A + 2E + 64 + N) scratch
  std::vector<float> log_d1;        // (E) Sinkhorn column scaling of the last training call
  AssignWork assign;                // BASE / Sinkhorn solver scratch (those kinds only)
  int64_t assign_work = 0;          // auction bids (BASE) or Sinkhorn iterations, last call
};

// Buffers for up to N_max tokens: max(N_max*K, E) assignments (expert choice takes at least one
// token per expert); kind BASE or SINKHORN also allocates the solver scratch.
void routing_init(Routing* r, int N_max, int E, int K, RouterKind kind = ROUTER_TOKEN_CHOICE);

// Routes N tokens. logits (N, E) = x Wr^T (+ b); e_bias (E) or null: selection-only bias;
// noise_logits (N, E) = x W_noise^T for noisy top-k (may be null when train is false, as no noise
// is drawn then), else null; ids (N) token ids for hash routing.
// seed makes the noisy and random draws reproducible; train = false turns the noise off (noisy
// top-k then takes the top K of the clean logits). The per-token draws (noise, random routing) of
// token t are keyed on (seed, t0 + t): t0 is the index of the first token, 0 in training (where t
// runs over the flattened batch), the cache position at inference, so that decoding one token at a
// time draws what one full-sequence call does.
void router_forward(Routing* r, const RouterSpec& spec, const float* logits, const float* e_bias,
                    const float* noise_logits, const int32_t* ids, int N, float capacity_factor,
                    uint64_t seed, bool train, int64_t t0 = 0);

// The router seed of one layer for a forward seed: the training forward's noisy and random draws
// use it, and inference uses router_layer_seed(0, layer), as the training evaluation does.
inline uint64_t router_layer_seed(uint64_t seed, int layer) {
  return seed * 1000003ULL + static_cast<uint64_t>(layer);
}

// Backward of the combine weights: dw (A) = dLoss/dw per assignment. Writes dlogits (N, E) and,
// for noisy top-k, dnoise_logits (N, E) (overwrite). Hash and random routing have no gradient.
void router_backward(const Routing& r, const RouterSpec& spec, const float* dw, float* dlogits,
                     float* dnoise_logits);

// Each loss returns its value and ACCUMULATES grad_scale * dL/dlogits into dlogits (N, E) if
// dlogits is non-null.
double router_aux_loss(const Routing& r, const RouterSpec& spec, float alpha, float grad_scale,
                       float* dlogits);
double router_z_loss(const float* logits, int N, int E, float beta, float grad_scale,
                     float* dlogits);
double router_seq_aux_loss(const Routing& r, const RouterSpec& spec, int seq_len, float alpha,
                           float grad_scale, float* dlogits);
double router_device_loss(const Routing& r, const RouterSpec& spec, int n_devices, float alpha,
                          float grad_scale, float* dlogits);
// Communication balance loss (DeepSeek-V2 §2.2.3): experts in D contiguous groups (devices);
// f''_d = D/(M*N) * (tokens with at least one selected expert on device d, before dropping),
// P''_d = sum_{i in d} P_i; L = alpha * sum_d f''_d * P''_d. M is the most devices a token may
// be sent to: max_devices (device-limited routing's top-M) if > 0, else min(K, D). Balanced
// traffic gives alpha * (tokens per device relative to M N / D), i.e. alpha at the limit.
double router_comm_loss(const Routing& r, const RouterSpec& spec, int n_devices, int max_devices,
                        float alpha, float grad_scale, float* dlogits);

// REINFORCE routing's score-function gradient (ROUTER_REINFORCE after a training forward).
//
// The router is a policy pi(S_t | x_t): the ordered draw S_t = (e_1..e_K) of K experts without
// replacement from p_t = softmax(logits_t), of probability (Plackett-Luce)
//   pi(S_t) = prod_k p_t[e_k] / (1 - sum_{j<k} p_t[e_j]).
// The discrete draw has no pathwise gradient, so the router learns from a reward: token t's
// negative cross-entropy r_t = -CE_t, against a baseline b (the trainer keeps an exponential
// moving average of the batch-mean reward over past steps: train_model.h). The surrogate loss is
//   L = -sum_t adv_t * log pi(S_t) - entropy * (1/N) sum_t H(p_t),   adv_t = (r_t - b) / n_counted
// (adv (N) is given; 0 for tokens without a target), whose gradient is the REINFORCE estimator
//   g = -(1/n) sum_t (r_t - b) grad log pi(S_t)   of   grad E_S[-mean_t r_t],
// unbiased for any b that does not depend on this step's draws (b comes from earlier steps; on
// the very first step it is that batch's own mean, an O(1/n) bias for one step). Variance: per
// token, Var[(r_t - b) grad log pi] ~ E[(r_t - b)^2] E|grad log pi|^2 with |grad log pi|^2 <=
// 2K; the cross-entropy's spread over tokens (several nats^2 on text) dominates, the baseline
// removes only the mean, so the estimate is far noisier than a pathwise gradient: it averages
// over the n tokens of the batch (variance / n) and the entropy bonus keeps p from collapsing
// before the signal accumulates. Using the token's own loss (not the sum of the losses it
// influences through attention) is the usual per-token credit assignment, itself a bias.
// d log pi / d logit_j = [j drawn] - K p_j + sum_{k>=1} ([j drawn before k] p_j - S_k p_j) /
// (1 - S_k), S_k = sum_{i<k} p[e_i]; dH/dlogit_j = -p_j (log p_j + H).
// The combine weights' own (pathwise) gradient is router_backward's, as for softmax top-k.
// ACCUMULATES grad_scale * dL/dlogits into dlogits (N, E) when non-null (adv may be null: the
// entropy bonus only). Returns the mean entropy (1/N) sum_t H(p_t).
double router_reinforce_grad(const Routing& r, const RouterSpec& spec, const float* adv,
                             float entropy, float grad_scale, float* dlogits);

}  // namespace moe
