#include "model/weights.h"

#include <cstdint>
#include <cstring>
#include <set>

#include "core/error.h"

namespace moe {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Binds tensors by name, checking shapes against the config and recording what was used.
// In spec mode (specs != null) it reads nothing: it lists the tensors a checkpoint of this config
// holds in the chosen expert layout, and every pointer it returns is null.
struct Binder {
  Model* m;
  std::vector<TensorSpec>* specs = nullptr;
  bool spec_fused = false;
  std::set<std::string> used;

  const std::string& file_of(const StTensor& t) const {
    return t.file ? *t.file : m->archive.origin;
  }

  // Where a missing tensor should have been: the single weights file, or the shard index.
  std::string weights_file() const {
    const StArchive& a = m->archive;
    if (a.files.size() == 1) return a.files[0]->path;
    return a.origin + "/model.safetensors.index.json";
  }

  const StTensor* find(const std::string& name) const { return m->archive.find(name); }
  bool has(const std::string& name) const {
    if (!specs) return find(name) != nullptr;
    if (name == "lm_head.weight") return !m->cfg.tie_embeddings;
    if (name.find("experts.gate_up_proj_blocks") != std::string::npos) return false;
    if (name.find("experts.gate_up_proj") != std::string::npos) return spec_fused;
    if (name.find("block_sparse_moe.") != std::string::npos) return !spec_fused;
    return false;
  }

  const StTensor& tensor(const std::string& name, const std::vector<int64_t>& shape) {
    const StTensor* t = find(name);
    if (!t)
      fail("%s: tensor '%s' is missing (needed by %s)", weights_file().c_str(), name.c_str(),
           m->cfg.path.c_str());
    if (t->shape != shape)
      fail("%s: tensor '%s': shape %s does not match config.json, which implies %s",
           file_of(*t).c_str(), name.c_str(), shape_str(t->shape).c_str(), shape_str(shape).c_str());
    if (t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F64)
      fail("%s: tensor '%s': dtype %s is not a float type (F32, BF16, F16, F64)",
           file_of(*t).c_str(), name.c_str(), dtype_name(t->dtype));
    if (used.insert(name).second) {
      m->n_params += t->numel();
      m->weight_bytes += static_cast<int64_t>(t->nbytes);
    }
    return *t;
  }

  float* alloc(size_t n) {
    m->owned.emplace_back(new float[n]);
    return m->owned.back().get();
  }

  // fp32 view of a tensor: in place when possible, else converted once.
  const float* f32(const std::string& name, const std::vector<int64_t>& shape) {
    if (specs) {
      specs->push_back({name, shape});
      return nullptr;
    }
    const StTensor& t = tensor(name, shape);
    size_t n = static_cast<size_t>(t.numel());
    if (t.dtype == DT_F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
      return reinterpret_cast<const float*>(t.data);
    float* dst = alloc(n);
    dtype_to_f32(t.dtype, t.data, dst, n);
    return dst;
  }

  const float* f32_if(bool cond, const std::string& name, const std::vector<int64_t>& shape) {
    return cond ? f32(name, shape) : nullptr;
  }

  Linear linear(const std::string& prefix, int out, int in, bool bias) {
    Linear l;
    l.out = out;
    l.in = in;
    l.w = f32(prefix + ".weight", {out, in});
    if (bias) l.b = f32(prefix + ".bias", {out});
    return l;
  }

  MlpWeights mlp(const std::string& prefix, int d, int f) {
    MlpWeights w;
    w.gate = linear(prefix + "gate_proj", f, d, false);
    w.up = linear(prefix + "up_proj", f, d, false);
    w.down = linear(prefix + "down_proj", d, f, false);
    return w;
  }
};

void bind_attention(Binder& b, LayerWeights& lw, const std::string& p) {
  const ModelConfig& c = b.m->cfg;
  const int64_t D = c.hidden, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  if (c.mla) {
    const int qk = c.qk_nope_dim + c.qk_rope_dim;
    if (c.q_lora_rank > 0) {
      lw.q_a = b.linear(p + "q_a_proj", c.q_lora_rank, D, c.o_bias);
      lw.q_a_norm = b.f32(p + "q_a_layernorm.weight", {c.q_lora_rank});
      lw.q_b = b.linear(p + "q_b_proj", H * qk, c.q_lora_rank, false);
    } else {
      lw.q = b.linear(p + "q_proj", H * qk, D, false);
    }
    lw.kv_a = b.linear(p + "kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_dim, D, c.o_bias);
    lw.kv_a_norm = b.f32(p + "kv_a_layernorm.weight", {c.kv_lora_rank});
    lw.kv_b = b.linear(p + "kv_b_proj", H * (c.qk_nope_dim + c.v_head_dim), c.kv_lora_rank, false);
    lw.o = b.linear(p + "o_proj", D, H * c.v_head_dim, c.o_bias);
    return;
  }
  lw.q = b.linear(p + "q_proj", H * hd, D, c.qkv_bias);
  lw.k = b.linear(p + "k_proj", KV * hd, D, c.qkv_bias);
  lw.v = b.linear(p + "v_proj", KV * hd, D, c.qkv_bias);
  lw.o = b.linear(p + "o_proj", D, H * hd, c.o_bias);
  if (c.qk_norm == QKNORM_HEAD) {
    lw.q_norm = b.f32(p + "q_norm.weight", {hd});
    lw.k_norm = b.f32(p + "k_norm.weight", {hd});
  } else if (c.qk_norm == QKNORM_FULL) {
    lw.q_norm = b.f32(p + "q_norm.weight", {H * hd});
    lw.k_norm = b.f32(p + "k_norm.weight", {KV * hd});
  }
  if (c.sinks) lw.sinks = b.f32(p + "sinks", {H});
}

// gpt-oss: gate_up_proj (E, D, 2F) with gate/up interleaved on the last axis, down_proj (E, F, D).
void bind_experts_gpt_oss(Binder& b, LayerWeights& lw, const std::string& p) {
  const ModelConfig& c = b.m->cfg;
  const int64_t E = c.n_experts, D = c.hidden, F = c.expert_ffn;
  if (b.has(p + "experts.gate_up_proj_blocks"))
    fail("%s: tensor '%sexperts.gate_up_proj_blocks': MXFP4-quantized experts are not supported; "
         "dequantize the checkpoint to bf16 first", b.weights_file().c_str(), p.c_str());
  const float* gu = b.f32(p + "experts.gate_up_proj", {E, D, 2 * F});
  const float* gub = b.f32(p + "experts.gate_up_proj_bias", {E, 2 * F});
  const float* dn = b.f32(p + "experts.down_proj", {E, F, D});
  const float* dnb = b.f32(p + "experts.down_proj_bias", {E, D});
  if (b.specs) return;
  float* gate = b.alloc(E * F * D);   // (E, F, D)
  float* up = b.alloc(E * F * D);     // (E, F, D)
  float* down = b.alloc(E * D * F);   // (E, D, F)
  float* gate_b = b.alloc(E * F);     // (E, F)
  float* up_b = b.alloc(E * F);       // (E, F)
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t d = 0; d < D; ++d) {
      const float* row = gu + (e * D + d) * 2 * F;
      for (int64_t f = 0; f < F; ++f) {
        gate[(e * F + f) * D + d] = row[2 * f];
        up[(e * F + f) * D + d] = row[2 * f + 1];
      }
    }
    for (int64_t f = 0; f < F; ++f) {
      gate_b[e * F + f] = gub[e * 2 * F + 2 * f];
      up_b[e * F + f] = gub[e * 2 * F + 2 * f + 1];
      for (int64_t d = 0; d < D; ++d) down[(e * D + d) * F + f] = dn[(e * F + f) * D + d];
    }
  }
  lw.experts.resize(E);
  for (int64_t e = 0; e < E; ++e) {
    ExpertWeights& x = lw.experts[e];
    x.gate = gate + e * F * D;
    x.up = up + e * F * D;
    x.down = down + e * D * F;
    x.gate_b = gate_b + e * F;
    x.up_b = up_b + e * F;
    x.down_b = dnb + e * D;
  }
}

void bind_moe(Binder& b, LayerWeights& lw, int layer) {
  Model* m = b.m;
  const ModelConfig& c = m->cfg;
  const int64_t E = c.n_experts, D = c.hidden, F = c.expert_ffn;
  const std::string L = "model.layers." + std::to_string(layer) + ".";
  std::string p = L + "mlp.";
  if (c.arch == ARCH_MIXTRAL && b.has(L + "block_sparse_moe.gate.weight")) p = L + "block_sparse_moe.";

  if (c.arch == ARCH_GPT_OSS) {
    lw.router = b.linear(p + "router", E, D, true);
    bind_experts_gpt_oss(b, lw, p);
    return;
  }
  const RouterKind rk = c.router.kind;
  if (rk != ROUTER_HASH && rk != ROUTER_RANDOM) lw.router = b.linear(p + "gate", E, D, false);
  if (rk == ROUTER_NOISY_TOPK) lw.router_noise = b.linear(p + "gate.noise", E, D, false);
  if (c.router.has_correction_bias) lw.e_bias = b.f32(p + "gate.e_score_correction_bias", {E});

  lw.experts.resize(E);
  if (b.has(p + "experts.gate_up_proj")) {
    m->fused_experts = true;
    const float* gu = b.f32(p + "experts.gate_up_proj", {E, 2 * F, D});
    const float* dn = b.f32(p + "experts.down_proj", {E, D, F});
    for (int64_t e = 0; gu && e < E; ++e) {
      lw.experts[e].gate = gu + e * 2 * F * D;
      lw.experts[e].up = gu + e * 2 * F * D + F * D;
      lw.experts[e].down = dn + e * D * F;
    }
  } else {
    const bool mixtral = c.arch == ARCH_MIXTRAL;
    const char* g = mixtral ? "w1" : "gate_proj";
    const char* u = mixtral ? "w3" : "up_proj";
    const char* d = mixtral ? "w2" : "down_proj";
    for (int64_t e = 0; e < E; ++e) {
      std::string pe = p + "experts." + std::to_string(e) + ".";
      lw.experts[e].gate = b.f32(pe + g + ".weight", {F, D});
      lw.experts[e].up = b.f32(pe + u + ".weight", {F, D});
      lw.experts[e].down = b.f32(pe + d + ".weight", {D, F});
    }
  }
  if (c.shared_ffn > 0) {
    bool qwen = c.arch == ARCH_QWEN2_MOE || c.arch == ARCH_MOE_CPP;
    lw.shared = b.mlp(p + (qwen ? "shared_expert." : "shared_experts."), D, c.shared_ffn);
    if (c.shared_gate) lw.shared_gate = b.linear(p + "shared_expert_gate", 1, D, false);
  }
}

bool ignorable_extra(const ModelConfig& c, const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return true;
  // DeepSeek-V3 hub checkpoints carry multi-token-prediction layers past num_hidden_layers.
  if (c.arch == ARCH_DEEPSEEK_V3 && name.rfind("model.layers.", 0) == 0) {
    int idx = std::atoi(name.c_str() + std::strlen("model.layers."));
    return idx >= c.n_layers;
  }
  return false;
}

void bind_all(Binder& b) {
  Model* m = b.m;
  const ModelConfig& c = m->cfg;
  const int64_t V = c.vocab, D = c.hidden;

  m->embed = b.f32("model.embed_tokens.weight", {V, D});
  m->final_norm = b.f32("model.norm.weight", {D});
  if (c.tie_embeddings && !b.has("lm_head.weight")) m->lm_head = m->embed;
  else m->lm_head = b.f32("lm_head.weight", {V, D});

  m->layers.assign(c.n_layers, LayerWeights());
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& lw = m->layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    lw.attn_norm = b.f32(p + "input_layernorm.weight", {D});
    lw.ffn_norm = b.f32(p + "post_attention_layernorm.weight", {D});
    bind_attention(b, lw, p + "self_attn.");
    if (c.is_moe[l]) bind_moe(b, lw, l);
    else lw.mlp = b.mlp(p + "mlp.", D, c.dense_ffn);
  }
}

}  // namespace

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& cfg, bool fused_experts) {
  Model m;
  m.cfg = cfg;
  std::vector<TensorSpec> specs;
  Binder b{&m, &specs, fused_experts || cfg.arch == ARCH_GPT_OSS, {}};
  bind_all(b);
  return specs;
}

void model_load(Model* m, const std::string& dir) {
  config_load(&m->cfg, dir);
  st_open_dir(&m->archive, dir);
  model_bind(m);
}

void model_bind(Model* m) {
  const ModelConfig& c = m->cfg;
  Binder b{m, nullptr, false, {}};
  bind_all(b);

  for (const auto& kv : m->archive.tensors) {
    if (b.used.count(kv.first) || ignorable_extra(c, kv.first)) continue;
    const StTensor& t = kv.second;
    fail("%s: tensor '%s' is not expected by %s (model_type %s)", b.file_of(t).c_str(),
         kv.first.c_str(), c.path.c_str(), arch_name(c.arch));
  }
}

}  // namespace moe
