// Model configuration: one struct for every supported architecture, read from a Hugging Face
// config.json. Architecture differences are data here (flags, kinds, per-layer vectors), so the
// forward pass has no per-architecture branches beyond those flags.
//
// Dimension legend used across the engine:
//   T tokens in a forward call, D hidden size, V vocab, L layers, H query heads, KV kv heads,
//   hd head dim, F ffn width, E routed experts, K experts per token (top-k).
#pragma once

#include <string>
#include <vector>

namespace moe {

enum Arch {
  ARCH_MIXTRAL,
  ARCH_QWEN2_MOE,
  ARCH_QWEN3_MOE,
  ARCH_OLMOE,
  ARCH_DEEPSEEK_V2,
  ARCH_DEEPSEEK_V3,
  ARCH_GPT_OSS,
  ARCH_MOE_CPP,  // moe.cpp's own config for trained models no standard architecture expresses
  ARCH_COUNT
};

const char* arch_name(Arch a);  // the config.json model_type
// Comma-separated list of supported model_type values.
std::string arch_supported_list();

enum QKNorm {
  QKNORM_NONE,
  QKNORM_HEAD,  // RMSNorm per head over hd (Qwen3)
  QKNORM_FULL,  // RMSNorm over the whole projection H*hd / KV*hd (OLMoE)
};

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

struct ModelConfig {
  Arch arch = ARCH_MIXTRAL;
  std::string path;  // config.json path, for error messages
  int vocab = 0, hidden = 0, n_layers = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float rms_eps = 1e-6f;
  int max_pos = 0;
  bool tie_embeddings = false;

  // attention
  bool qkv_bias = false;
  bool o_bias = false;
  QKNorm qk_norm = QKNORM_NONE;
  float clip_qkv = 0.0f;  // 0 = off
  bool sinks = false;
  std::vector<int> window;  // [L] sliding window per layer, 0 = full attention
  float attn_scale = 0.0f;
  RopeSpec rope;

  // MLA (DeepSeek); mla == false for the others
  bool mla = false;
  int q_lora_rank = 0;  // 0 = plain q_proj
  int kv_lora_rank = 0;
  int qk_nope_dim = 0, qk_rope_dim = 0, v_head_dim = 0;

  // FFN
  int dense_ffn = 0;          // intermediate_size of dense layers
  std::vector<char> is_moe;   // [L]
  int n_experts = 0, top_k = 0, expert_ffn = 0;
  RouterSpec router;
  ExpertAct act = ACT_SWIGLU;
  bool expert_bias = false;
  float act_alpha = 1.702f, act_limit = 7.0f;
  int shared_ffn = 0;         // width of the shared expert MLP, 0 = none
  bool shared_gate = false;   // sigmoid(x . w) gate on the shared expert (Qwen2-MoE)

  std::vector<int> eos_ids;   // from config.json / generation_config.json
  int bos_id = -1;

  int n_moe_layers() const;
  int qk_head_dim() const { return mla ? qk_nope_dim + qk_rope_dim : head_dim; }
  int v_dim() const { return mla ? v_head_dim : head_dim; }
};

// Reads dir/config.json (and dir/generation_config.json for eos ids if present).
// Throws MoeError naming the file and field.
void config_load(ModelConfig* cfg, const std::string& dir);
// Parses config.json text; `path` is used in messages.
void config_parse(ModelConfig* cfg, const std::string& json_text, const std::string& path);

// Names of the router kinds and score functions as written in moe_cpp configs and CLI flags.
const char* router_kind_name(RouterKind k);
bool router_kind_parse(const std::string& s, RouterKind* out);

// config.json text for a model trained here: a model of a Hugging Face family (cfg->arch, as
// loaded from a checkpoint) in that family's form when it expresses the model exactly (checked by
// parsing it back); else the standard Hugging Face architecture that expresses it exactly
// (qwen3_moe, qwen2_moe, olmoe, mixtral) when there is one, else moe_cpp.
// The chosen arch is written to cfg->arch.
std::string config_to_json(ModelConfig* cfg);

}  // namespace moe
