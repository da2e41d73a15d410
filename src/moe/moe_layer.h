// The feed-forward block: dense SwiGLU MLP and the sparse MoE layer.
//
// The MoE layer is computed sparsely: route the tokens, sort the (token, expert) assignments by
// expert into contiguous segments, run each expert only on its segment, then combine each token's
// expert outputs with its routing weights (by token, in assignment order, so results do not depend
// on threading).
//
// Routing follows config.router.kind. Token choice (the Hugging Face families) runs moe_route
// below. The training-time routers run router_forward of moe/router.h with train = false and no
// capacity (dropless), so a moe_cpp model computes what the training forward computes in eval
// mode (train_forward(..., train = false) of one sequence, capacity factor 0):
//  - noisy top-k: no noise; the top K of the clean logits, softmax over the K selected. The noise
//    projection is loaded with the model and unused.
//  - hash: experts are a fixed function of the token id (moe_forward needs the ids).
//  - random: uniform draws keyed on (router_layer_seed(0, layer), position), as the training
//    evaluation of a sequence starting at position 0; a decoded token draws what it would in a
//    full-sequence call. Sequences other than the first of a training batch draw differently.
//  - expert choice: each expert takes its top-C tokens among the T tokens of ONE moe_forward call
//    (C = ceil(T*K/E), at most floor(T*K/E), at least 1; router.h), so a token gets a variable
//    number of experts (0 to E) and its output depends on the other tokens of the call: it is
//    non-causal, and decoding (T = 1: every expert takes the one token) differs from a
//    full-sequence forward. It equals the training forward only for the same set of tokens.
//
// Experts kept raw (BF16, Q8_0, Q4_0; model/weights.h) run without conversion at load. Short
// segments (decode) go through the dot kernels of quant/quant.h, all such experts in one OpenMP
// region split by (expert, block of output rows); the inputs of block-quantized matrices are
// quantized to Q8_0 once per segment, which is the only numerical difference from running the
// dequantized weights in fp32. Long segments (prefill) dequantize blocks of weight rows into a
// buffer allocated once and use sgemm. On the dot path every output element is computed by one
// thread in a fixed order, so results do not depend on the thread count; sgemm products large
// enough to be split over threads (op_sgemm) may differ in the last bits between thread counts.
// The shared expert(s) and dense MLPs run through linear_forward (ops/linear.h).
//
// Legend: T tokens, D model width, F expert width, E experts, K experts per token.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "moe/router.h"
#include "ops/linear.h"

namespace moe {

constexpr int kMaxGroups = 64;  // largest n_group a router may use

// Routes T tokens. logits (T, E) are the router's outputs (bias included); e_bias (E) is the
// selection-only correction bias or null. Writes idx (T, K) and weights w (T, K).
// Ties between equal scores go to the lower expert index. work: (2E + kMaxGroups) floats.
void moe_route(const RouterSpec& r, const float* logits, const float* e_bias, int T, int E, int K,
               int32_t* idx, float* w, float* work);

// Buffers for one FFN call of up to T_max tokens, allocated once. A_max = T_max * K assignments,
// or max(T_max * K, E) for expert choice.
struct FfnScratch {
  int T_max = 0;
  std::vector<float> logits;    // (T_max, E)
  // After moe_forward: the (T, K) experts and combine weights of each token. For expert choice
  // (a variable number of experts per token), each token's K highest-weight experts (ties: lower
  // expert), padded with expert -1 and weight 0 when it has fewer than K.
  std::vector<int32_t> idx;     // (T_max, K)
  std::vector<float> w;         // (T_max, K)
  std::vector<int32_t> counts;  // (E + 1) segment offsets after the prefix sum
  std::vector<int32_t> cursor;  // (E) fill position per expert
  std::vector<float> route_work;  // (2E + kMaxGroups)
  std::vector<int32_t> order;   // (A_max) assignment at each sorted slot
  std::vector<int32_t> slot;    // (A_max) sorted slot of each assignment
  std::vector<float> xs;        // (A_max, D) gathered inputs, sorted by expert
  std::vector<float> g;         // (max(A_max, T_max), Fmax) gate activations
  std::vector<float> u;         // (max(A_max, T_max), Fmax) up activations
  std::vector<float> ys;        // (A_max, D) expert outputs, sorted by expert
  std::vector<float> tmp;       // (T_max, D)
  std::vector<float> gate1;     // (T_max) shared-expert gate

  // Raw experts (BF16 / Q8_0 / Q4_0, see ExpertWeights). A segment of at most
  // quant_dot_max_tokens tokens runs row by row through the dot kernels (Q8_0 activations for the
  // block types, each weight row against up to 4 tokens at once); a longer one dequantizes
  // deq_rows weight rows at a time into wdeq for sgemm. 64: about where the two cost the same for
  // Q4_0 / Q8_0 experts (`moe bench layer --dot-max-tokens`, OLMoE-1B-7B and Qwen3-30B-A3B,
  // 2 threads, AVX-512 VNNI): the dot path was faster at ~32 tokens per expert, about as fast at
  // ~64 and ~10% slower at ~128.
  int quant_dot_max_tokens = 64;
  // The same for BF16 experts, whose rows go one token at a time through dot_bf16_f32: at ~64
  // tokens per expert that path took 1.4x (OLMoE) to 1.7x (gpt-oss) the time of sgemm.
  int bf16_dot_max_tokens = 16;
  int deq_rows = 0;
  std::vector<uint8_t> xq;          // (A_max, Q8X bytes of D) gathered inputs as Q8X
  std::vector<uint8_t> hq;          // (A_max, Q8X bytes of F) expert activations as Q8X
  std::vector<float> wdeq;          // (deq_rows, max(D, F)) dequantized weight rows
  std::vector<int32_t> dot_experts; // (E) experts of this call that use the dot kernels
  LinearScratch lin;                // shared expert(s) and dense MLPs with raw matrices

  // Routers other than token choice (allocated only for them): router_forward's state, and for
  // expert choice each token's assignments in assignment order (tok_asg[tok_off[t]..tok_off[t+1]]).
  bool use_router = false;
  Routing routing;
  std::vector<int32_t> tok_off;     // (T_max + 1)
  std::vector<int32_t> tok_asg;     // (A_max)
};

void ffn_scratch_init(FfnScratch* s, const ModelConfig& c, int T_max);

// The most tokens a raw expert whose matrices are of type t may have in a call and still run
// through the dot kernels.
inline int ffn_dot_max_tokens(const FfnScratch& s, QType t) {
  return qtype_is_block(t) ? s.quant_dot_max_tokens : s.bf16_dot_max_tokens;
}
// Sets both thresholds (0: every raw expert through dequantize + sgemm).
inline void ffn_set_dot_max_tokens(FfnScratch* s, int n) {
  s->quant_dot_max_tokens = s->bf16_dot_max_tokens = n;
}

// out (T, D) = down(silu(gate x) * up x). g, u: scratch of (T, F); ls: for raw matrices.
void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u,
                 LinearScratch* ls);

// out (T, D) = MoE(x) for x (T, D): routed experts plus shared expert(s) if configured.
// ids (T): the tokens' ids, needed by hash routing (MoeError if null then), else may be null.
// pos: position of the first token (random routing's draws); seed: the layer's router seed
// (router_layer_seed(0, layer) at inference; random routing). Leaves the routing in s->idx, s->w.
void moe_forward(float* out, const ModelConfig& c, const LayerWeights& lw, const float* x, int T,
                 FfnScratch* s, const int32_t* ids, int pos, uint64_t seed);

}  // namespace moe
