#include "model/gguf_model.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/ggml_types.h"

namespace moe {

namespace {

using json = nlohmann::json;

// The architectures read, as general.architecture names them, with the model_type they map to.
struct ArchMap {
  const char* gguf;
  const char* model_type;
};
constexpr ArchMap kArchs[] = {
    {"qwen3moe", "qwen3_moe"}, {"qwen2moe", "qwen2_moe"}, {"olmoe", "olmoe"}, {"llama", "mixtral"},
    {"deepseek2", "deepseek_v2"}, {"gpt-oss", "gpt_oss"}};

const char* model_type_of(const GgufFile& g, const std::string& arch) {
  // deepseek2 with sigmoid gating (expert_gating_func 2) is DeepSeek-V3.
  if (arch == "deepseek2" && g.get_int("deepseek2.expert_gating_func", 1) == 2) return "deepseek_v3";
  for (const ArchMap& a : kArchs)
    if (arch == a.gguf) return a.model_type;
  fail("%s: key 'general.architecture' is '%s', which is not supported (supported: qwen3moe, "
       "qwen2moe, olmoe, llama with experts, deepseek2, gpt-oss)", g.path.c_str(), arch.c_str());
}

// YaRN from rope.scaling.* (llama.cpp stores mscale_all_dim * 0.1 as yarn_log_multiplier).
void rope_scaling_json(const GgufFile& g, const std::string& A, json* j) {
  const std::string type = g.get_str(A + "rope.scaling.type", "none");
  if (type == "none" || type == "linear") return;
  if (type != "yarn")
    fail("%s: key '%srope.scaling.type' is '%s' (supported: none, yarn)", g.path.c_str(),
         A.c_str(), type.c_str());
  json r;
  r["type"] = "yarn";
  r["factor"] = g.get_float(A + "rope.scaling.factor", 1.0);
  r["original_max_position_embeddings"] = g.get_int(A + "rope.scaling.original_context_length");
  r["beta_fast"] = g.get_float(A + "rope.scaling.yarn_beta_fast", 32.0);
  r["beta_slow"] = g.get_float(A + "rope.scaling.yarn_beta_slow", 1.0);
  const double m = g.get_float(A + "rope.scaling.yarn_log_multiplier", 0.0) / 0.1;
  if (m > 0) r["mscale"] = r["mscale_all_dim"] = m;
  if (A == "gpt-oss.") r["truncate"] = false;  // gpt-oss's YaRN keeps the fractional bounds
  (*j)["rope_scaling"] = r;
}

// DeepSeek's MLA and routing fields.
void deepseek_json(const GgufFile& g, const std::string& A, int64_t L, json* jp) {
  json& j = *jp;
  const int64_t rope = g.get_int(A + "rope.dimension_count");
  const bool mla = g.find(A + "attention.key_length_mla") != nullptr;
  const int64_t kl = g.get_int(A + (mla ? "attention.key_length_mla" : "attention.key_length"));
  const int64_t vl = g.get_int(A + (mla ? "attention.value_length_mla" : "attention.value_length"));
  j.erase("head_dim");
  j["qk_rope_head_dim"] = rope;
  j["qk_nope_head_dim"] = kl - rope;
  j["v_head_dim"] = vl;
  j["kv_lora_rank"] = g.get_int(A + "attention.kv_lora_rank");
  const int64_t ql = g.get_int(A + "attention.q_lora_rank", 0);
  if (ql > 0) j["q_lora_rank"] = ql;
  j["first_k_dense_replace"] = g.get_int(A + "leading_dense_block_count", 0);
  j["n_routed_experts"] = j["num_experts"];
  j.erase("num_experts");
  j["n_shared_experts"] = g.get_int(A + "expert_shared_count", 0);
  j["routed_scaling_factor"] = g.get_float(A + "expert_weights_scale", 1.0);
  j["norm_topk_prob"] = g.get_int(A + "expert_weights_norm", 0) != 0;
  const int64_t ng = g.get_int(A + "expert_group_count", 1);
  j["n_group"] = ng;
  j["topk_group"] = g.get_int(A + "expert_group_used_count", 1);
  if (j["model_type"] == "deepseek_v2") j["topk_method"] = ng > 1 ? "group_limited_greedy" : "greedy";
  else j["rope_interleave"] = true;
  (void)L;
}

// ne[1] of a tensor (its rows per 2-D slice), or 0 if absent.
int64_t rows_of(const GgufFile& g, const std::string& name) {
  const GgufTensor* t = g.tensor(name);
  return t ? t->ne[1] : 0;
}

// The first layer's width of an FFN tensor kind (ffn_gate_exps, ffn_gate, ffn_gate_shexp).
int64_t ffn_width(const GgufFile& g, int n_layers, const char* kind) {
  for (int l = 0; l < n_layers; ++l) {
    const int64_t r = rows_of(g, "blk." + std::to_string(l) + "." + kind + ".weight");
    if (r > 0) return r;
  }
  return 0;
}

}  // namespace

std::string gguf_config_json(const GgufFile& g) {
  const std::string arch = g.get_str("general.architecture");
  const std::string mt = model_type_of(g, arch);
  const std::string A = arch + ".";
  const GgufTensor* embd = g.tensor("token_embd.weight");
  if (!embd) fail("%s: tensor 'token_embd.weight' is missing", g.path.c_str());
  const int64_t L = g.get_int(A + "block_count");
  if (L < 1 || L > 100000)
    fail("%s: key '%sblock_count' is %lld, out of range", g.path.c_str(), A.c_str(),
         static_cast<long long>(L));
  // Counts that size allocations before the tensors are checked against them.
  for (const char* k : {"attention.head_count", "attention.head_count_kv", "expert_count",
                        "expert_used_count"}) {
    const int64_t v = g.get_int(A + k, 1);
    if (v < 0 || v > 65536)
      fail("%s: key '%s%s' is %lld, out of range", g.path.c_str(), A.c_str(), k,
           static_cast<long long>(v));
  }
  const int64_t H = g.get_int(A + "attention.head_count");
  json j;
  j["model_type"] = mt;
  j["vocab_size"] = embd->ne[1];
  j["hidden_size"] = g.get_int(A + "embedding_length");
  j["num_hidden_layers"] = L;
  j["num_attention_heads"] = H;
  j["num_key_value_heads"] = g.get_int(A + "attention.head_count_kv", H);
  j["rms_norm_eps"] = g.get_float(A + "attention.layer_norm_rms_epsilon", 1e-6);
  j["max_position_embeddings"] = g.get_int(A + "context_length", 4096);
  j["rope_theta"] = g.get_float(A + "rope.freq_base", 10000.0);
  j["tie_word_embeddings"] = g.tensor("output.weight") == nullptr;
  if (g.find(A + "attention.key_length")) j["head_dim"] = g.get_int(A + "attention.key_length");
  const int64_t E = g.get_int(A + "expert_count");
  if (E < 1) fail("%s: key '%sexpert_count' is %lld: not a mixture-of-experts model",
                  g.path.c_str(), A.c_str(), static_cast<long long>(E));
  j[mt == "mixtral" ? "num_local_experts" : "num_experts"] = E;
  j["num_experts_per_tok"] = g.get_int(A + "expert_used_count");
  const int64_t F = ffn_width(g, static_cast<int>(L), "ffn_gate_exps");
  const int64_t dense = ffn_width(g, static_cast<int>(L), "ffn_gate");
  const int64_t shared = ffn_width(g, static_cast<int>(L), "ffn_gate_shexp");
  json dense_layers = json::array();
  for (int64_t l = 0; l < L; ++l)
    if (!g.tensor("blk." + std::to_string(l) + ".ffn_gate_inp.weight")) dense_layers.push_back(l);
  if (mt == "qwen3_moe" || mt == "qwen2_moe") {
    j["moe_intermediate_size"] = F;
    j["intermediate_size"] = dense > 0 ? dense : F;
    j["mlp_only_layers"] = dense_layers;
    j["decoder_sparse_step"] = 1;
    j["norm_topk_prob"] = g.find(A + "expert_weights_norm")
                              ? g.get_int(A + "expert_weights_norm") != 0
                              : mt == "qwen3_moe";
    if (mt == "qwen2_moe") j["shared_expert_intermediate_size"] = shared;
  } else if (mt == "deepseek_v2" || mt == "deepseek_v3") {
    j["moe_intermediate_size"] = F;
    j["intermediate_size"] = dense > 0 ? dense : F;
    deepseek_json(g, A, L, &j);
  } else if (mt == "gpt_oss") {
    j["intermediate_size"] = F;
    j["attention_bias"] = g.tensor("blk.0.attn_q.bias") != nullptr;
    j["sliding_window"] = g.get_int(A + "attention.sliding_window");
    json types = json::array();  // llama.cpp's pattern: even layers slide
    for (int64_t l = 0; l < L; ++l) types.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
    j["layer_types"] = types;
  } else {
    if (!dense_layers.empty())
      fail("%s: tensor 'blk.%d.ffn_gate_inp.weight' is missing (%s has no dense layers)",
           g.path.c_str(), dense_layers[0].get<int>(), arch.c_str());
    j["intermediate_size"] = F;
    if (mt == "olmoe") j["norm_topk_prob"] = false;
  }
  rope_scaling_json(g, A, &j);
  if (g.find("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = g.get_int("tokenizer.ggml.bos_token_id");
  if (g.find("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = g.get_int("tokenizer.ggml.eos_token_id");
  return j.dump();
}

namespace {

// The Hugging Face name of a per-layer GGUF tensor suffix (after "blk.N."), or "" if unknown.
// Expert tensors (ffn_*_exps) are handled apart.
std::string hf_layer_name(const std::string& s, const std::string& mt) {
  const std::string mlp = mt == "mixtral" ? "block_sparse_moe." : "mlp.";
  static const std::pair<const char*, const char*> mla[] = {
      {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
      {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
      {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
      {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
      {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
      {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
      {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
      {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
      {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
      {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
  };
  if (mt == "deepseek_v2" || mt == "deepseek_v3") {
    for (const auto& f : mla)
      if (s == f.first) return f.second;
  }
  static const std::pair<const char*, const char*> fixed[] = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},
      {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
      {"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"},
      {"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"},
      {"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"},
      {"ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight"},
  };
  static const std::pair<const char*, const char*> oss[] = {
      {"attn_sinks.weight", "self_attn.sinks"},
      {"post_attention_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate_inp.weight", "mlp.router.weight"},
      {"ffn_gate_inp.bias", "mlp.router.bias"},
      {"ffn_gate_exps.bias", "mlp.experts.gate_proj_bias"},
      {"ffn_up_exps.bias", "mlp.experts.up_proj_bias"},
      {"ffn_down_exps.bias", "mlp.experts.down_proj_bias"},
      {"attn_output.bias", "self_attn.o_proj.bias"},
  };
  if (mt == "gpt_oss") {
    for (const auto& f : oss)
      if (s == f.first) return f.second;
  }
  if (s == "ffn_gate_inp.weight") return mlp + "gate.weight";
  for (const auto& f : fixed)
    if (s == f.first) return f.second;
  return "";
}

// Builds m->archive from the GGUF tensors (see gguf_model.h).
struct ArchiveBuilder {
  Model* m;
  const GgufFile* g;
  std::string mt;
  std::vector<std::map<std::string, std::string>> meta;  // [files]

  size_t file_index(const GgufTensor& t) const {
    for (size_t i = 0; i < g->files.size(); ++i)
      if (t.file == &g->files[i]->path) return i;
    MOE_CHECK(false);
  }

  // Adds tensor `name` (Hugging Face shape `shape`, rows of t's type) at data.
  void add(const std::string& name, const GgufTensor& t, const uint8_t* data,
           const std::vector<int64_t>& shape) {
    StTensor s;
    s.name = name;
    s.shape = shape;
    s.data = data;
    s.file = t.file;
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const int64_t cols = shape.back();
    s.nbytes = static_cast<size_t>(qtype_row_bytes(t.type, cols) * (numel / cols));
    if (t.type == QT_F32 || t.type == QT_F16 || t.type == QT_BF16) {
      s.dtype = t.type == QT_F32 ? DT_F32 : t.type == QT_F16 ? DT_F16 : DT_BF16;
    } else {
      s.dtype = DT_U8;
      s.shape = {numel / cols, qtype_row_bytes(t.type, cols)};
      std::string v = std::string(qtype_name(t.type)) + ":";
      for (size_t i = 0; i < shape.size(); ++i) v += (i ? "," : "") + std::to_string(shape[i]);
      meta[file_index(t)]["moe.quant." + name] = v;
    }
    if (!m->archive.tensors.emplace(name, s).second)
      fail("%s: tensor '%s' maps to '%s', which another tensor already maps to",
           t.file->c_str(), t.name.c_str(), name.c_str());
  }

  // The tensor's shape in Hugging Face order (outermost first).
  static std::vector<int64_t> hf_shape(const GgufTensor& t) {
    std::vector<int64_t> s;
    for (int d = t.n_dims - 1; d >= 0; --d) s.push_back(t.ne[d]);
    return s;
  }

  // llama's Q / K rows back in Hugging Face order (see gguf_model.h), into an owned buffer.
  const uint8_t* unpermute(const GgufTensor& t, int n_head) {
    const int64_t rows = t.rows(), rb = qtype_row_bytes(t.type, t.ne[0]);
    if (n_head <= 0 || rows % (2 * n_head) != 0)
      fail("%s: tensor '%s': %lld rows are not whole heads of %d", t.file->c_str(),
           t.name.c_str(), static_cast<long long>(rows), n_head);
    const int64_t hd = rows / n_head, half = hd / 2;
    m->owned.emplace_back(new float[static_cast<size_t>((rows * rb + 3) / 4)]);
    uint8_t* dst = reinterpret_cast<uint8_t*>(m->owned.back().get());  // (rows, rb)
    for (int64_t h = 0; h < n_head; ++h)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t j = 0; j < 2; ++j)
          std::memcpy(dst + (h * hd + j * half + i) * rb, t.data + (h * hd + 2 * i + j) * rb,
                      static_cast<size_t>(rb));
    return dst;
  }

  // MLA's kv_b_proj (H*(nope+v), kv_lora) in fp32 from llama.cpp's split form: attn_k_b
  // ne = [nope, kv_lora, H] (each head's key rows transposed), attn_v_b ne = [kv_lora, v, H].
  void kv_b_from_split(const GgufTensor& kb, int layer) {
    const std::string vname = "blk." + std::to_string(layer) + ".attn_v_b.weight";
    const GgufTensor* vb = g->tensor(vname);
    if (!vb) fail("%s: tensor '%s' is missing (needed with '%s')", kb.file->c_str(), vname.c_str(),
                  kb.name.c_str());
    const int64_t nope = kb.ne[0], r = kb.ne[1], H = kb.ne[2], v = vb->ne[1];
    if (kb.n_dims != 3 || vb->n_dims != 3 || vb->ne[0] != r || vb->ne[2] != H)
      fail("%s: tensors '%s' [%lld, %lld, %lld] and '%s' [%lld, %lld, %lld] do not fit together",
           kb.file->c_str(), kb.name.c_str(), (long long)kb.ne[0], (long long)kb.ne[1],
           (long long)kb.ne[2], vname.c_str(), (long long)vb->ne[0], (long long)vb->ne[1],
           (long long)vb->ne[2]);
    std::vector<float> kf(static_cast<size_t>(kb.numel())), vf(static_cast<size_t>(vb->numel()));
    dequantize_all(kb, kf.data());
    dequantize_all(*vb, vf.data());
    m->owned.emplace_back(new float[static_cast<size_t>(H * (nope + v) * r)]);
    float* w = m->owned.back().get();  // (H, nope + v, r)
    for (int64_t h = 0; h < H; ++h) {
      float* wh = w + h * (nope + v) * r;
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < nope; ++j) wh[j * r + i] = kf[(h * r + i) * nope + j];
      std::memcpy(wh + nope * r, vf.data() + h * v * r, sizeof(float) * v * r);
    }
    GgufTensor f32 = kb;
    f32.type = QT_F32;
    add("model.layers." + std::to_string(layer) + ".self_attn.kv_b_proj.weight", f32,
        reinterpret_cast<const uint8_t*>(w), {H * (nope + v), r});
  }

  static void dequantize_all(const GgufTensor& t, float* dst) {
    const int64_t rb = qtype_row_bytes(t.type, t.ne[0]);
    for (int64_t i = 0; i < t.rows(); ++i)
      dequantize_row(t.type, t.data + i * rb, dst + i * t.ne[0], t.ne[0]);
  }

  void experts(const GgufTensor& t, const std::string& prefix, const char* proj) {
    if (t.n_dims != 3)
      fail("%s: tensor '%s': expected 3 dimensions, got %d", t.file->c_str(), t.name.c_str(),
           t.n_dims);
    const int64_t rb = qtype_row_bytes(t.type, t.ne[0]);
    for (int64_t e = 0; e < t.ne[2]; ++e)
      add(prefix + "experts." + std::to_string(e) + "." + proj + ".weight", t,
          t.data + e * t.ne[1] * rb, {t.ne[1], t.ne[0]});
  }

  void layer_tensor(const GgufTensor& t, int layer, const std::string& suffix) {
    const std::string P = "model.layers." + std::to_string(layer) + ".";
    const bool mixtral = mt == "mixtral";
    const std::string mlp = P + (mixtral ? "block_sparse_moe." : "mlp.");
    if (suffix == "ffn_gate_exps.weight") return experts(t, mlp, mixtral ? "w1" : "gate_proj");
    if (suffix == "ffn_up_exps.weight") return experts(t, mlp, mixtral ? "w3" : "up_proj");
    if (suffix == "ffn_down_exps.weight") return experts(t, mlp, mixtral ? "w2" : "down_proj");
    if (suffix == "attn_k_b.weight" && mt.rfind("deepseek", 0) == 0) return kv_b_from_split(t, layer);
    if (suffix == "attn_v_b.weight" && mt.rfind("deepseek", 0) == 0) return;  // with attn_k_b
    const std::string hf = hf_layer_name(suffix, mt);
    if (hf.empty())
      fail("%s: tensor '%s' is not expected for architecture '%s'", t.file->c_str(),
           t.name.c_str(), g->get_str("general.architecture").c_str());
    std::vector<int64_t> shape = hf_shape(t);
    if (suffix == "ffn_gate_inp_shexp.weight" && shape.size() == 1) shape = {1, shape[0]};
    const uint8_t* data = t.data;
    if (mixtral && (suffix == "attn_q.weight" || suffix == "attn_k.weight"))
      data = unpermute(t, suffix == "attn_q.weight" ? m->cfg.n_heads : m->cfg.n_kv_heads);
    add(P + hf, t, data, shape);
  }

  void build() {
    meta.assign(g->files.size(), {});
    for (auto& mm : meta) {
      mm["moe.format_version"] = "1";
      mm["moe.source"] = "gguf";
    }
    for (const std::string& name : g->order) {
      const GgufTensor& t = g->tensors.at(name);
      if (name == "token_embd.weight") add("model.embed_tokens.weight", t, t.data, hf_shape(t));
      else if (name == "output_norm.weight") add("model.norm.weight", t, t.data, hf_shape(t));
      else if (name == "output.weight") add("lm_head.weight", t, t.data, hf_shape(t));
      else if (name == "rope_freqs.weight") continue;  // llama.cpp's rope scaling table
      else if (name.rfind("blk.", 0) == 0) {
        const size_t dot = name.find('.', 4);
        const std::string idx = name.substr(4, dot == std::string::npos ? 0 : dot - 4);
        if (idx.empty() || idx.size() > 6 || idx.find_first_not_of("0123456789") != std::string::npos)
          fail("%s: tensor '%s': bad layer index", t.file->c_str(), name.c_str());
        const int layer = std::stoi(idx);
        if (layer >= m->cfg.n_layers)
          fail("%s: tensor '%s': layer %d is past block_count %d", t.file->c_str(), name.c_str(),
               layer, m->cfg.n_layers);
        layer_tensor(t, layer, name.substr(dot + 1));
      } else {
        fail("%s: tensor '%s' is not expected for architecture '%s'", t.file->c_str(),
             name.c_str(), g->get_str("general.architecture").c_str());
      }
    }
  }
};

}  // namespace

void gguf_model_load(Model* m, const std::string& path, const LoadOptions& opt) {
  GgufFile g;
  gguf_open(&g, path);
  config_parse(&m->cfg, gguf_config_json(g), path);
  m->archive = StArchive();
  m->archive.origin = path;
  ArchiveBuilder b{m, &g, arch_name(m->cfg.arch), {}};
  b.build();
  m->archive.file_metadata = b.meta;
  m->archive.metadata = b.meta.empty() ? std::map<std::string, std::string>{} : b.meta[0];
  for (auto& f : g.files) m->archive.files.push_back(std::move(f));
  model_bind(m, opt);
}

}  // namespace moe
