// `moe inspect`: architecture summary, parameter counts and memory needs of a checkpoint.
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "model/weights.h"

namespace moe {

namespace {

std::string layer_list(const std::vector<char>& flags, bool want) {
  std::string s;
  int n = static_cast<int>(flags.size());
  for (int i = 0; i < n;) {
    if (static_cast<bool>(flags[i]) != want) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < n && static_cast<bool>(flags[j + 1]) == want) ++j;
    if (!s.empty()) s += ",";
    s += j > i ? std::to_string(i) + "-" + std::to_string(j) : std::to_string(i);
    i = j + 1;
  }
  return s.empty() ? "none" : s;
}

std::string router_desc(const ModelConfig& c) {
  const RouterSpec& r = c.router;
  std::string s;
  if (r.topk_then_softmax) s = "top-k on logits, then softmax over the selected";
  else s = std::string(r.score == SCORE_SOFTMAX ? "softmax" : "sigmoid") + " scores, top-k";
  if (r.has_bias) s += "; router bias";
  if (r.has_correction_bias) s += "; selection-only correction bias";
  if (r.group == GROUP_MAX) s += strfmt("; group-limited (max) %d of %d groups", r.topk_group, r.n_group);
  if (r.group == GROUP_TOP2_SUM)
    s += strfmt("; group-limited (top-2 sum) %d of %d groups", r.topk_group, r.n_group);
  if (r.norm_topk) s += "; renormalised";
  if (r.scale != 1.0f) s += strfmt("; scaled by %g", r.scale);
  return s;
}

std::string human(double v) {
  if (v >= 1e9) return strfmt("%.2fB", v / 1e9);
  if (v >= 1e6) return strfmt("%.2fM", v / 1e6);
  if (v >= 1e3) return strfmt("%.1fK", v / 1e3);
  return strfmt("%.0f", v);
}

}  // namespace

CommandRun cmd_inspect_register(CLI::App* app) {
  struct Opts {
    std::string model;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  app->add_flag("--json", o->json, "print the summary as JSON");
  return [o]() {
    Model m;
    model_load(&m, o->model);
    const ModelConfig& c = m.cfg;
    const int64_t D = c.hidden, F = c.expert_ffn;
    int64_t per_expert = 3 * F * D + (c.expert_bias ? 2 * F + D : 0);
    int64_t inactive = static_cast<int64_t>(c.n_moe_layers()) * (c.n_experts - c.top_k) * per_expert;
    int64_t embed = static_cast<int64_t>(c.vocab) * D * (c.tie_embeddings && m.lm_head == m.embed ? 1 : 2);
    int64_t active = m.n_params - inactive;
    int64_t kv_per_token = c.mla ? static_cast<int64_t>(c.n_layers) * (c.kv_lora_rank + c.qk_rope_dim) * 4
                                 : static_cast<int64_t>(c.n_layers) * 2 * c.n_kv_heads * c.head_dim * 4;
    nlohmann::ordered_json j;
    j["model_type"] = arch_name(c.arch);
    j["layers"] = c.n_layers;
    j["moe_layers"] = layer_list(c.is_moe, true);
    j["dense_layers"] = layer_list(c.is_moe, false);
    j["hidden_size"] = c.hidden;
    j["vocab_size"] = c.vocab;
    j["attention"] = c.mla ? strfmt("MLA: %d heads, q_lora %d, kv_lora %d, nope %d, rope %d, v %d",
                                    c.n_heads, c.q_lora_rank, c.kv_lora_rank, c.qk_nope_dim,
                                    c.qk_rope_dim, c.v_head_dim)
                           : strfmt("GQA: %d query heads, %d kv heads, head_dim %d", c.n_heads,
                                    c.n_kv_heads, c.head_dim);
    j["rope"] = c.rope.type + strfmt(" (theta %g)", c.rope.theta);
    j["experts"] = c.n_experts;
    j["top_k"] = c.top_k;
    j["expert_ffn"] = c.expert_ffn;
    j["shared_expert_ffn"] = c.shared_ffn;
    j["router"] = router_desc(c);
    j["params_total"] = m.n_params;
    j["params_active_per_token"] = active;
    j["params_embedding"] = embed;
    j["weight_bytes"] = m.weight_bytes;
    j["kv_cache_bytes_per_token"] = kv_per_token;
    if (o->json) {
      write_stdout(j.dump(2) + "\n");
      return 0;
    }
    std::string s;
    s += strfmt("model_type        %s\n", arch_name(c.arch));
    s += strfmt("layers            %d (MoE: %s; dense: %s)\n", c.n_layers,
                layer_list(c.is_moe, true).c_str(), layer_list(c.is_moe, false).c_str());
    s += strfmt("hidden / vocab    %d / %d\n", c.hidden, c.vocab);
    s += strfmt("attention         %s\n", j["attention"].get<std::string>().c_str());
    s += strfmt("rope              %s\n", j["rope"].get<std::string>().c_str());
    if (c.n_moe_layers() > 0) {
      s += strfmt("experts           %d routed x ffn %d, top-%d per token\n", c.n_experts,
                  c.expert_ffn, c.top_k);
      s += strfmt("shared experts    %s\n",
                  c.shared_ffn ? strfmt("ffn %d%s", c.shared_ffn, c.shared_gate ? " (sigmoid-gated)" : "").c_str()
                               : "none");
      s += strfmt("router            %s\n", router_desc(c).c_str());
    }
    s += strfmt("parameters        %s total, %s active per token (%s in embeddings)\n",
                human(static_cast<double>(m.n_params)).c_str(), human(static_cast<double>(active)).c_str(),
                human(static_cast<double>(embed)).c_str());
    s += strfmt("memory            %.2f MiB of weights as stored; KV cache %.1f KiB per token (fp32)\n",
                m.weight_bytes / 1048576.0, kv_per_token / 1024.0);
    write_stdout(s);
    return 0;
  };
}

}  // namespace moe
