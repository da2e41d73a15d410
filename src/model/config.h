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

#include "core/specs.h"

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

  // Multi-token prediction (DeepSeek-V3, num_nextn_predict_layers): mtp_layers modules stored as
  // layers n_layers .. n_layers + mtp_layers - 1; is_moe and window then have n_layers +
  // mtp_layers entries (the modules' blocks), every other per-layer vector n_layers.
  int mtp_layers = 0;

  std::vector<int> eos_ids;   // from config.json / generation_config.json
  int bos_id = -1;

  int n_moe_layers() const;
  int qk_head_dim() const { return mla ? qk_nope_dim + qk_rope_dim : head_dim; }
  int v_dim() const { return mla ? v_head_dim : head_dim; }
};

// The routed experts' FFN parameters of c.
inline ExpertFfnSpec expert_ffn_spec(const ModelConfig& c) {
  return ExpertFfnSpec{c.hidden, c.expert_ffn, c.act, c.act_alpha, c.act_limit};
}

// Reads dir/config.json (and dir/generation_config.json for eos ids if present).
// Throws MoeError naming the file and field.
void config_load(ModelConfig* cfg, const std::string& dir);
// Parses config.json text; `path` is used in messages.
void config_parse(ModelConfig* cfg, const std::string& json_text, const std::string& path);

// Forgets the MTP modules of cfg (a DeepSeek-V3 checkpoint saved without them, as transformers
// saves it): mtp_layers 0 and the per-layer vectors cut to n_layers.
void config_drop_mtp(ModelConfig* cfg);

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
