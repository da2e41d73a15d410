// The parameters of the engine's ops that come from a model's configuration: RoPE, routers and
// expert activations. They live below both the model (model/config.h holds them) and the ops
// (which take them), so that kernels need no model headers.
#pragma once

#include <string>
#include <vector>

namespace moe {

enum RopeLayout {
  ROPE_HALF,         // pairs (i, i + d/2)
  ROPE_INTERLEAVED,  // pairs (2i, 2i + 1)
};

enum ScoreFunc { SCORE_SOFTMAX, SCORE_SIGMOID };

enum GroupSelect {
  GROUP_NONE,
  GROUP_MAX,       // group score = max expert score in the group (DeepSeek-V2)
  GROUP_TOP2_SUM,  // group score = sum of the two best biased scores (DeepSeek-V3)
};

enum ExpertAct {
  ACT_SWIGLU,        // silu(g) * u
  ACT_SWIGLU_OAI,    // gpt-oss: g=min(g,limit), u=clamp(u,-limit,limit), (u+1)*g*sigmoid(alpha*g)
};

// Who chooses: tokens pick experts (the seven HF families), or one of the training-time variants.
enum RouterKind {
  ROUTER_TOKEN_CHOICE,   // scores (softmax/sigmoid), optional bias/groups, top-k per token
  ROUTER_NOISY_TOPK,     // Shazeer 2017: top-k of logits + N(0,1) * softplus(x W_noise), softmax
  ROUTER_EXPERT_CHOICE,  // Zhou 2022: each expert takes its top-C tokens by softmax score
  ROUTER_HASH,           // fixed hash of the token id, no learned router
  ROUTER_RANDOM,         // uniform random experts, a baseline
  ROUTER_BASE,           // Lewis 2021: balanced assignment in training, greedy top-1 at inference
  ROUTER_SINKHORN,       // Megatron sinkhorn balancing: selection on Sinkhorn-scaled scores
  ROUTER_REINFORCE,      // experts sampled from the softmax policy, score-function gradient
};

// The shape and activation of the routed experts' FFN: down(act(gate x, up x)).
struct ExpertFfnSpec {
  int hidden = 0;  // D
  int ffn = 0;     // F
  ExpertAct act = ACT_SWIGLU;
  float alpha = 1.702f, limit = 7.0f;  // ACT_SWIGLU_OAI
};

// How a router turns logits into (expert index, weight) pairs.
struct RouterSpec {
  RouterKind kind = ROUTER_TOKEN_CHOICE;
  ScoreFunc score = SCORE_SOFTMAX;
  bool topk_then_softmax = false;  // gpt-oss / Mixtral-paper style: softmax over the K selected logits
  bool has_bias = false;           // router linear has a bias (gpt-oss)
  bool has_correction_bias = false;  // e_score_correction_bias, for selection only (DeepSeek-V3)
  GroupSelect group = GROUP_NONE;
  int n_group = 1;
  int topk_group = 1;
  bool norm_topk = false;  // renormalise the K selected weights to sum to 1
  float norm_eps = 0.0f;   // added to the denominator when renormalising (1e-20 in DeepSeek-V3)
  float scale = 1.0f;      // routed_scaling_factor
};

struct RopeSpec {
  std::string type = "default";  // "default" or "yarn"
  double theta = 10000.0;
  int dim = 0;  // rotary dims (hd, or qk_rope_head_dim for MLA)
  RopeLayout layout = ROPE_HALF;
  // yarn
  double factor = 1.0;
  double orig_max_pos = 0.0;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;  // 0 = not given
  bool truncate = true;
  double attention_factor = 1.0;  // multiplies cos and sin
  std::vector<float> inv_freq;    // [dim/2], computed by config_finalize
};

}  // namespace moe
