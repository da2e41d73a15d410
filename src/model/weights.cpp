#include "model/weights.h"

#include <cstdint>
#include <cstring>
#include <set>

#include "core/error.h"
#include "dist/comm.h"
#include "dist/placement.h"
#include "io/mapped_file.h"
#include "model/gguf_model.h"
#include "quant/ggml_types.h"

namespace moe {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

const char* kQuantPrefix = "moe.quant.";
const char* kFormatVersionKey = "moe.format_version";
const char* kSourceKey = "moe.source";

// A "moe.quant.<name>" value: "<q8_0|q4_0>:<d0>,<d1>,...[:t]".
struct QuantMeta {
  QType type = QT_F32;
  std::vector<int64_t> shape;
  bool transposed = false;
};

// The types the checkpoint writers store (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K); with ggml, every GGUF
// type (F16, Q4_1, .., MXFP4) too (archives made from a GGUF file, model/gguf_model.h, whose
// metadata has kSourceKey = "gguf").
bool parse_quant_meta(const std::string& v, QuantMeta* q, bool ggml) {
  const size_t c1 = v.find(':');
  if (c1 == std::string::npos || !qtype_parse_any(v.substr(0, c1), &q->type) ||
      !(qtype_is_written_block(q->type) || (ggml && qtype_is_ggml(q->type))))
    return false;
  const size_t c2 = v.find(':', c1 + 1);
  const std::string dims =
      v.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1);
  if (c2 != std::string::npos) {
    if (v.substr(c2 + 1) != "t") return false;
    q->transposed = true;
  }
  size_t i = 0;
  while (i <= dims.size()) {
    size_t j = dims.find(',', i);
    if (j == std::string::npos) j = dims.size();
    const std::string d = dims.substr(i, j - i);
    if (d.empty() || d.size() > 15 || d.find_first_not_of("0123456789") != std::string::npos)
      return false;
    q->shape.push_back(std::stoll(d));
    i = j + 1;
  }
  return !q->shape.empty() && (!q->transposed || q->shape.size() >= 2);
}

// How a bound tensor is stored. raw != QT_F32 when its rows can be used as stored: BF16, or a
// block format (then the tensor is U8 [rows, row_bytes] and rows/cols describe the matrix).
struct Stored {
  const StTensor* t = nullptr;
  QType raw = QT_F32;
  bool transposed = false;
  int64_t rows = 0, cols = 0, row_bytes = 0;
};

// An expert matrix: fp32 (f), or raw rows (type, data, row_bytes).
struct Mat {
  const float* f = nullptr;
  QType type = QT_F32;
  const uint8_t* data = nullptr;
  int64_t row_bytes = 0;
};

// Points an ExpertWeights matrix at rows row0.. of m (cols wide), with the given row step.
void place(const Mat& m, int64_t row0, int64_t cols, int64_t step, const float** f, QWeight* q) {
  if (m.f) *f = m.f + row0 * cols;
  else if (m.data) *q = QWeight{m.type, m.data + row0 * m.row_bytes, step * m.row_bytes};
}

// Binds tensors by name, checking shapes against the config and recording what was used.
// In spec mode (specs != null) it reads nothing: it lists the tensors a checkpoint of this config
// holds in the chosen expert layout, and every pointer it returns is null.
struct Binder {
  Model* m;
  std::vector<TensorSpec>* specs = nullptr;
  bool spec_fused = false;
  std::set<std::string> used;
  LoadOptions opt = {};

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
  bool owned(int64_t e) const {
    return opt.expert_end < 0 || (e >= opt.expert_begin && e < opt.expert_end);
  }
  bool all_owned() const { return opt.expert_end < 0; }
  bool has(const std::string& name) const {
    if (!specs) return find(name) != nullptr;
    if (name == "lm_head.weight") return !m->cfg.tie_embeddings;
    if (name.find("experts.gate_up_proj_blocks") != std::string::npos) return false;
    if (name.find("experts.gate_up_proj") != std::string::npos) return spec_fused;
    if (name.find("block_sparse_moe.") != std::string::npos) return !spec_fused;
    return false;
  }

  void check_version(const std::map<std::string, std::string>& meta, const StTensor& t) const {
    auto v = meta.find(kFormatVersionKey);
    if (v == meta.end())
      fail("%s: __metadata__ describes quantized tensors ('%s...') but has no '%s'",
           file_of(t).c_str(), kQuantPrefix, kFormatVersionKey);
    if (v->second != "1")
      fail("%s: __metadata__ '%s' is '%s'; this build reads version 1", file_of(t).c_str(),
           kFormatVersionKey, v->second.c_str());
  }

  // transposed_ok: the caller handles ':t' storage (gpt-oss's expert tensors only).
  Stored tensor(const std::string& name, const std::vector<int64_t>& shape,
                bool transposed_ok = false) {
    const StTensor* t = find(name);
    if (!t)
      fail("%s: tensor '%s' is missing (needed by %s)", weights_file().c_str(), name.c_str(),
           m->cfg.path.c_str());
    const char* f = file_of(*t).c_str();
    const auto& meta = m->archive.metadata_of(*t);
    const std::string key = kQuantPrefix + name;
    auto it = meta.find(key);
    Stored st;
    st.t = t;
    if (t->dtype == DT_U8 && it != meta.end()) {
      check_version(meta, *t);
      QuantMeta q;
      auto src = meta.find(kSourceKey);
      if (!parse_quant_meta(it->second, &q, src != meta.end() && src->second == "gguf"))
        fail("%s: __metadata__ '%s' = '%s': expected '<q8_0|q4_0>:<d0>,<d1>,...[:t]' (or q4_k, "
             "q5_k, q6_k)",
             f, key.c_str(), it->second.c_str());
      if (q.transposed && !transposed_ok)
        fail("%s: tensor '%s': transposed (':t') storage is only supported for gpt-oss's expert "
             "tensors", f, name.c_str());
      if (q.shape != shape)
        fail("%s: tensor '%s': shape %s (from __metadata__) does not match config.json, which "
             "implies %s", f, name.c_str(), shape_str(q.shape).c_str(), shape_str(shape).c_str());
      const size_t n = shape.size();
      st.cols = q.transposed ? shape[n - 2] : shape[n - 1];
      st.rows = st.cols > 0 ? numel_of(shape) / st.cols : 0;
      if (st.cols % qtype_block_size(q.type) != 0)
        fail("%s: tensor '%s': %s rows of %lld weights are not whole blocks of %d", f,
             name.c_str(), qtype_name(q.type), static_cast<long long>(st.cols),
             qtype_block_size(q.type));
      st.row_bytes = qtype_row_bytes(q.type, st.cols);
      const std::vector<int64_t> want = {st.rows, st.row_bytes};
      if (t->shape != want)
        fail("%s: tensor '%s': stored shape %s does not match %s %s, which needs U8 %s", f,
             name.c_str(), shape_str(t->shape).c_str(), qtype_name(q.type),
             shape_str(shape).c_str(), shape_str(want).c_str());
      st.raw = q.type;
      st.transposed = q.transposed;
    } else {
      if (it != meta.end())
        fail("%s: tensor '%s': __metadata__ has '%s' but the tensor's dtype is %s, not U8", f,
             name.c_str(), key.c_str(), dtype_name(t->dtype));
      if (t->dtype == DT_U8)
        fail("%s: tensor '%s': dtype U8 is not a float type (F32, BF16, F16, F64) and "
             "__metadata__ has no '%s' entry to describe it as quantized", f, name.c_str(),
             key.c_str());
      if (t->shape != shape)
        fail("%s: tensor '%s': shape %s does not match config.json, which implies %s", f,
             name.c_str(), shape_str(t->shape).c_str(), shape_str(shape).c_str());
      if (t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F64)
        fail("%s: tensor '%s': dtype %s is not a float type (F32, BF16, F16, F64)", f,
             name.c_str(), dtype_name(t->dtype));
      if (t->dtype == DT_BF16) {
        st.raw = QT_BF16;
        st.cols = shape.empty() ? 1 : shape.back();
        st.rows = st.cols > 0 ? numel_of(shape) / st.cols : 0;
        st.row_bytes = 2 * st.cols;
      }
    }
    if (used.insert(name).second) {
      m->n_params += numel_of(shape);
      m->weight_bytes += static_cast<int64_t>(t->nbytes);
    }
    return st;
  }

  float* alloc(size_t n) {
    m->owned.emplace_back(new float[n]);
    return m->owned.back().get();
  }

  // fp32 copy of a raw tensor's rows (dequantized), in stored order.
  float* dequantized(const Stored& st) {
    float* dst = alloc(static_cast<size_t>(st.rows * st.cols));
    for (int64_t r = 0; r < st.rows; ++r)
      dequantize_row(st.raw, st.t->data + r * st.row_bytes, dst + r * st.cols, st.cols);
    return dst;
  }

  // fp32 view of a tensor: in place when possible, else converted (or dequantized) once.
  const float* f32(const std::string& name, const std::vector<int64_t>& shape,
                   TensorRole role = TR_OTHER) {
    if (specs) {
      specs->push_back({name, shape, role, false});
      return nullptr;
    }
    const Stored st = tensor(name, shape);
    if (opt.no_data) return nullptr;
    if (qtype_is_block(st.raw) || qtype_is_ggml(st.raw)) return dequantized(st);
    const StTensor& t = *st.t;
    size_t n = static_cast<size_t>(numel_of(shape));
    if (t.dtype == DT_F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
      return reinterpret_cast<const float*>(t.data);
    float* dst = alloc(n);
    dtype_to_f32(t.dtype, t.data, dst, n);
    return dst;
  }

  const float* f32_if(bool cond, const std::string& name, const std::vector<int64_t>& shape) {
    return cond ? f32(name, shape) : nullptr;
  }

  // A routed-expert (or raw-capable linear) matrix (.., out, in): raw when stored as BF16 /
  // Q8_0 / Q4_0 (unless opt.dequantize), else an fp32 view.
  // load = false: validated only (an expert this process does not hold). rows_per_expert > 0:
  // a fused (E, rows, cols) tensor, of which only the held experts' rows are converted when it
  // must be converted to fp32.
  Mat expert_mat(const std::string& name, const std::vector<int64_t>& shape,
                 TensorRole role = TR_EXPERT, bool load = true, int64_t rows_per_expert = 0) {
    if (specs) {
      specs->push_back({name, shape, role, false});
      return {};
    }
    const Stored st = tensor(name, shape);
    if (opt.no_data || !load) return {};
    const bool convert = st.raw == QT_F32 || opt.dequantize;
    if (convert && rows_per_expert > 0 && !all_owned()) return Mat{held_rows_f32(st, shape, rows_per_expert)};
    if (convert) return Mat{f32(name, shape, role)};
    return Mat{nullptr, st.raw, st.t->data, st.row_bytes};
  }

  // An fp32 view of a fused (E, rows_per_expert, cols) expert tensor: f32(), or only the held
  // experts' rows converted.
  const float* held_f32(const std::string& name, const std::vector<int64_t>& shape, int64_t rpe) {
    if (all_owned()) return f32(name, shape, TR_EXPERT);
    return held_rows_f32(tensor(name, shape), shape, rpe);
  }

  // fp32 copy of a fused expert tensor in which only the held experts' rows are filled (the
  // rest of the buffer is never written, so never resident); F32 in place when aligned.
  const float* held_rows_f32(const Stored& st, const std::vector<int64_t>& shape, int64_t rpe) {
    const StTensor& t = *st.t;
    const int64_t cols = shape.back(), n = numel_of(shape);
    if (t.dtype == DT_F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
      return reinterpret_cast<const float*>(t.data);
    float* dst = alloc(static_cast<size_t>(n));
    const int64_t r0 = opt.expert_begin * rpe, r1 = opt.expert_end * rpe;
    for (int64_t r = r0; r < r1; ++r) {
      if (qtype_is_block(st.raw) || qtype_is_ggml(st.raw)) {
        dequantize_row(st.raw, t.data + r * st.row_bytes, dst + r * cols, cols);
      } else {
        dtype_to_f32(t.dtype, t.data + r * cols * dtype_size(t.dtype), dst + r * cols,
                     static_cast<size_t>(cols));
      }
    }
    return dst;
  }

  // A TR_LINEAR matrix stored as BF16 / Q8_0 / Q4_0 stays raw (unless opt.dequantize or
  // !allow_raw); anything else is an fp32 view.
  Linear linear(const std::string& prefix, int out, int in, bool bias,
                TensorRole role = TR_LINEAR, bool allow_raw = true) {
    Linear l;
    l.out = out;
    l.in = in;
    if (role == TR_LINEAR && allow_raw) {
      const Mat w = expert_mat(prefix + ".weight", {out, in}, TR_LINEAR);
      l.w = w.f;
      if (w.data) l.q = QWeight{w.type, w.data, w.row_bytes};
    } else {
      l.w = f32(prefix + ".weight", {out, in}, role);
    }
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
    lw.kv_b = b.linear(p + "kv_b_proj", H * (c.qk_nope_dim + c.v_head_dim), c.kv_lora_rank, false,
                       TR_LINEAR, false);
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
// As stored by Hugging Face (F32/BF16) they are rearranged into fp32 (E, F, D) / (E, D, F) at
// load. Quantized with ':t' they are stored as (E, 2F, D) rows (gate row f at 2f, up at 2f + 1)
// and (E, D, F) rows, and used in place with a row step of 2 for gate and up.
// gpt-oss from a GGUF file (model/gguf_model.h): per-expert gate / up (F, D) and down (D, F)
// matrices, used raw, and the biases as experts.{gate,up,down}_proj_bias (E, F) / (E, D).
void bind_experts_gpt_oss_split(Binder& b, LayerWeights& lw, const std::string& p) {
  const ModelConfig& c = b.m->cfg;
  const int64_t E = c.n_experts, D = c.hidden, F = c.expert_ffn;
  const float* gb = b.f32(p + "experts.gate_proj_bias", {E, F});
  const float* ub = b.f32(p + "experts.up_proj_bias", {E, F});
  const float* db = b.f32(p + "experts.down_proj_bias", {E, D});
  lw.experts.resize(E);
  for (int64_t e = 0; e < E; ++e) {
    const std::string pe = p + "experts." + std::to_string(e) + ".";
    ExpertWeights& x = lw.experts[e];
    place(b.expert_mat(pe + "gate_proj.weight", {F, D}), 0, D, 1, &x.gate, &x.gate_q);
    place(b.expert_mat(pe + "up_proj.weight", {F, D}), 0, D, 1, &x.up, &x.up_q);
    place(b.expert_mat(pe + "down_proj.weight", {D, F}), 0, F, 1, &x.down, &x.down_q);
    if (b.opt.no_data) continue;
    x.gate_b = gb + e * F;
    x.up_b = ub + e * F;
    x.down_b = db + e * D;
  }
}

void bind_experts_gpt_oss(Binder& b, LayerWeights& lw, const std::string& p) {
  const ModelConfig& c = b.m->cfg;
  const int64_t E = c.n_experts, D = c.hidden, F = c.expert_ffn;
  if (!b.specs && b.has(p + "experts.0.gate_proj.weight")) return bind_experts_gpt_oss_split(b, lw, p);
  if (b.has(p + "experts.gate_up_proj_blocks"))
    fail("%s: tensor '%sexperts.gate_up_proj_blocks': MXFP4-quantized experts are not supported; "
         "dequantize the checkpoint to bf16 first", b.weights_file().c_str(), p.c_str());
  if (b.specs) {
    b.specs->push_back({p + "experts.gate_up_proj", {E, D, 2 * F}, TR_EXPERT, true});
    b.specs->push_back({p + "experts.gate_up_proj_bias", {E, 2 * F}, TR_OTHER, false});
    b.specs->push_back({p + "experts.down_proj", {E, F, D}, TR_EXPERT, true});
    b.specs->push_back({p + "experts.down_proj_bias", {E, D}, TR_OTHER, false});
    return;
  }
  const Stored gu = b.tensor(p + "experts.gate_up_proj", {E, D, 2 * F}, true);
  const float* gub = b.f32(p + "experts.gate_up_proj_bias", {E, 2 * F});
  const Stored dn = b.tensor(p + "experts.down_proj", {E, F, D}, true);
  const float* dnb = b.f32(p + "experts.down_proj_bias", {E, D});
  for (const Stored* st : {&gu, &dn}) {
    if ((qtype_is_block(st->raw) || qtype_is_ggml(st->raw)) && !st->transposed)
      fail("%s: tensor '%s': gpt-oss expert tensors must be quantized transposed (':t'), along "
           "their input axis", b.file_of(*st->t).c_str(), st->t->name.c_str());
  }
  lw.experts.resize(E);
  if (b.opt.no_data) return;
  float* gate_b = b.alloc(E * F);  // (E, F)
  float* up_b = b.alloc(E * F);    // (E, F)
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t f = 0; f < F; ++f) {
      gate_b[e * F + f] = gub[e * 2 * F + 2 * f];
      up_b[e * F + f] = gub[e * 2 * F + 2 * f + 1];
    }
    lw.experts[e].gate_b = gate_b + e * F;
    lw.experts[e].up_b = up_b + e * F;
    lw.experts[e].down_b = dnb + e * D;
  }

  if (gu.transposed && !b.opt.dequantize) {
    const Mat m{nullptr, gu.raw, gu.t->data, gu.row_bytes};
    for (int64_t e = 0; e < E; ++e) {
      if (!b.owned(e)) continue;
      place(m, e * 2 * F, D, 2, &lw.experts[e].gate, &lw.experts[e].gate_q);
      place(m, e * 2 * F + 1, D, 2, &lw.experts[e].up, &lw.experts[e].up_q);
    }
  } else {
    float* gate = b.alloc(E * F * D);  // (E, F, D)
    float* up = b.alloc(E * F * D);    // (E, F, D)
    if (gu.transposed) {
      for (int64_t r = 0; r < E * 2 * F; ++r) {  // stored row r = (e, 2f + {0: gate, 1: up})
        if (!b.owned(r / (2 * F))) continue;
        float* dst = (r % 2 ? up : gate) + (r / 2) * D;
        dequantize_row(gu.raw, gu.t->data + r * gu.row_bytes, dst, D);
      }
    } else {
      const float* src = b.held_f32(p + "experts.gate_up_proj", {E, D, 2 * F}, D);
      for (int64_t e = 0; e < E; ++e) {
        if (!b.owned(e)) continue;
        for (int64_t d = 0; d < D; ++d) {
          const float* row = src + (e * D + d) * 2 * F;
          for (int64_t f = 0; f < F; ++f) {
            gate[(e * F + f) * D + d] = row[2 * f];
            up[(e * F + f) * D + d] = row[2 * f + 1];
          }
        }
      }
    }
    for (int64_t e = 0; e < E; ++e) {
      if (!b.owned(e)) continue;
      lw.experts[e].gate = gate + e * F * D;
      lw.experts[e].up = up + e * F * D;
    }
  }

  if (dn.transposed && !b.opt.dequantize) {
    const Mat m{nullptr, dn.raw, dn.t->data, dn.row_bytes};
    for (int64_t e = 0; e < E; ++e)
      if (b.owned(e)) place(m, e * D, F, 1, &lw.experts[e].down, &lw.experts[e].down_q);
  } else {
    float* down = b.alloc(E * D * F);  // (E, D, F)
    if (dn.transposed) {
      for (int64_t r = 0; r < E * D; ++r)
        if (b.owned(r / D)) dequantize_row(dn.raw, dn.t->data + r * dn.row_bytes, down + r * F, F);
    } else {
      const float* src = b.held_f32(p + "experts.down_proj", {E, F, D}, F);
      for (int64_t e = 0; e < E; ++e)
        for (int64_t f = 0; f < F && b.owned(e); ++f)
          for (int64_t d = 0; d < D; ++d) down[(e * D + d) * F + f] = src[(e * F + f) * D + d];
    }
    for (int64_t e = 0; e < E; ++e)
      if (b.owned(e)) lw.experts[e].down = down + e * D * F;
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
    lw.router = b.linear(p + "router", E, D, true, TR_OTHER);
    bind_experts_gpt_oss(b, lw, p);
    return;
  }
  const RouterKind rk = c.router.kind;
  if (rk != ROUTER_HASH && rk != ROUTER_RANDOM)
    lw.router = b.linear(p + "gate", E, D, false, TR_OTHER);
  if (rk == ROUTER_NOISY_TOPK)
    lw.router_noise = b.linear(p + "gate.noise", E, D, false, TR_OTHER);
  if (c.router.has_correction_bias) lw.e_bias = b.f32(p + "gate.e_score_correction_bias", {E});

  lw.experts.resize(E);
  if (b.has(p + "experts.gate_up_proj")) {
    m->fused_experts = true;
    const Mat gu = b.expert_mat(p + "experts.gate_up_proj", {E, 2 * F, D}, TR_EXPERT, true, 2 * F);
    const Mat dn = b.expert_mat(p + "experts.down_proj", {E, D, F}, TR_EXPERT, true, D);
    for (int64_t e = 0; e < E; ++e) {
      if (!b.owned(e)) continue;
      ExpertWeights& x = lw.experts[e];
      place(gu, e * 2 * F, D, 1, &x.gate, &x.gate_q);
      place(gu, e * 2 * F + F, D, 1, &x.up, &x.up_q);
      place(dn, e * D, F, 1, &x.down, &x.down_q);
    }
  } else {
    const bool mixtral = c.arch == ARCH_MIXTRAL;
    const char* g = mixtral ? "w1" : "gate_proj";
    const char* u = mixtral ? "w3" : "up_proj";
    const char* d = mixtral ? "w2" : "down_proj";
    for (int64_t e = 0; e < E; ++e) {
      std::string pe = p + "experts." + std::to_string(e) + ".";
      ExpertWeights& x = lw.experts[e];
      const bool own = b.owned(e);
      place(b.expert_mat(pe + g + ".weight", {F, D}, TR_EXPERT, own), 0, D, 1, &x.gate, &x.gate_q);
      place(b.expert_mat(pe + u + ".weight", {F, D}, TR_EXPERT, own), 0, D, 1, &x.up, &x.up_q);
      place(b.expert_mat(pe + d + ".weight", {D, F}, TR_EXPERT, own), 0, F, 1, &x.down, &x.down_q);
    }
  }
  if (c.shared_ffn > 0) {
    bool qwen = c.arch == ARCH_QWEN2_MOE || c.arch == ARCH_MOE_CPP;
    lw.shared = b.mlp(p + (qwen ? "shared_expert." : "shared_experts."), D, c.shared_ffn);
    if (c.shared_gate) lw.shared_gate = b.linear(p + "shared_expert_gate", 1, D, false, TR_OTHER);
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

void bind_layer(Binder& b, LayerWeights& lw, int l) {
  const ModelConfig& c = b.m->cfg;
  const int64_t D = c.hidden;
  const std::string p = "model.layers." + std::to_string(l) + ".";
  lw.attn_norm = b.f32(p + "input_layernorm.weight", {D});
  lw.ffn_norm = b.f32(p + "post_attention_layernorm.weight", {D});
  bind_attention(b, lw, p + "self_attn.");
  if (c.is_moe[l]) bind_moe(b, lw, l);
  else lw.mlp = b.mlp(p + "mlp.", D, c.dense_ffn);
}

// MTP module k: layer L + k's block, its norms and projection, and its own copies of the
// embedding and head when the checkpoint has them (DeepSeek-V3's hub files).
void bind_mtp(Binder& b, int k) {
  Model* m = b.m;
  const ModelConfig& c = m->cfg;
  const int l = c.n_layers + k;
  const int64_t V = c.vocab, D = c.hidden;
  bind_layer(b, m->layers[l], l);
  MtpWeights& mt = m->mtp[k];
  const std::string p = "model.layers." + std::to_string(l) + ".";
  mt.enorm = b.f32(p + "enorm.weight", {D});
  mt.hnorm = b.f32(p + "hnorm.weight", {D});
  mt.eh_proj = b.linear(p + "eh_proj", static_cast<int>(D), static_cast<int>(2 * D), false);
  mt.head_norm = b.f32(p + "shared_head.norm.weight", {D});
  mt.embed = m->embed;
  mt.head = m->lm_head;
  mt.head_q = m->lm_head_q;
  if (!b.specs && b.has(p + "embed_tokens.weight")) mt.embed = b.f32(p + "embed_tokens.weight", {V, D});
  if (!b.specs && b.has(p + "shared_head.head.weight")) {
    const Mat w = b.expert_mat(p + "shared_head.head.weight", {V, D}, TR_OUTPUT);
    mt.head = w.f;
    mt.head_q = w.data ? QWeight{w.type, w.data, w.row_bytes} : QWeight{};
  }
}

void bind_all(Binder& b) {
  Model* m = b.m;
  const ModelConfig& c = m->cfg;
  const int64_t V = c.vocab, D = c.hidden;

  m->embed = b.f32("model.embed_tokens.weight", {V, D});
  m->final_norm = b.f32("model.norm.weight", {D});
  if (c.tie_embeddings && !b.has("lm_head.weight")) {
    m->lm_head = m->embed;
  } else {
    const Mat w = b.expert_mat("lm_head.weight", {V, D}, TR_OUTPUT);
    m->lm_head = w.f;
    if (w.data) m->lm_head_q = QWeight{w.type, w.data, w.row_bytes};
  }

  m->layers.assign(c.n_layers + c.mtp_layers, LayerWeights());
  for (int l = 0; l < c.n_layers; ++l) bind_layer(b, m->layers[l], l);
  m->mtp.assign(c.mtp_layers, MtpWeights());
  for (int k = 0; k < c.mtp_layers; ++k) bind_mtp(b, k);
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

void model_load(Model* m, const std::string& dir, const LoadOptions& opt_in) {
  if (is_gguf_path(dir)) {  // raw experts stay in the map: untouched unless routed to
    gguf_model_load(m, dir, opt_in);
    return;
  }
  LoadOptions opt = opt_in;
  config_load(&m->cfg, dir);
  Comm& ep = comm_ep();
  if (opt.expert_end < 0 && ep.size() > 1) {  // this rank's block of experts only
    opt.expert_begin = ep_expert_begin(m->cfg.n_experts, ep.size(), ep.rank());
    opt.expert_end = ep_expert_begin(m->cfg.n_experts, ep.size(), ep.rank() + 1);
  }
  st_open_dir(&m->archive, dir);
  model_bind(m, opt);
}

void model_bind(Model* m, const LoadOptions& opt) {
  // A DeepSeek-V3 checkpoint saved by transformers has no MTP layers although its config counts
  // them: it loads without them.
  if (m->cfg.mtp_layers > 0 && m->cfg.arch == ARCH_DEEPSEEK_V3 &&
      !m->archive.find("model.layers." + std::to_string(m->cfg.n_layers) + ".eh_proj.weight"))
    config_drop_mtp(&m->cfg);
  const ModelConfig& c = m->cfg;
  Binder b{m, nullptr, false, {}, opt};
  bind_all(b);

  // Every quantization entry must describe a tensor of its own file.
  const StArchive& ar = m->archive;
  for (size_t i = 0; i < ar.files.size() && i < ar.file_metadata.size(); ++i) {
    for (const auto& kv : ar.file_metadata[i]) {
      if (kv.first.rfind(kQuantPrefix, 0) != 0) continue;
      const StTensor* t = ar.find(kv.first.substr(std::strlen(kQuantPrefix)));
      if (!t || t->file != &ar.files[i]->path)
        fail("%s: __metadata__ '%s' names no tensor of this file", ar.files[i]->path.c_str(),
             kv.first.c_str());
    }
  }

  for (const auto& kv : m->archive.tensors) {
    if (b.used.count(kv.first) || ignorable_extra(c, kv.first)) continue;
    const StTensor& t = kv.second;
    fail("%s: tensor '%s' is not expected by %s (model_type %s)", b.file_of(t).c_str(),
         kv.first.c_str(), c.path.c_str(), arch_name(c.arch));
  }
}

namespace {

// The byte range of an expert matrix of `rows` rows of `cols` weights, fp32 or raw.
void add_range(std::vector<std::pair<uintptr_t, uintptr_t>>* v, const float* f, const QWeight& q,
               int64_t rows, int64_t cols) {
  if (f) {
    const auto a = reinterpret_cast<uintptr_t>(f);
    v->push_back({a, a + static_cast<uintptr_t>(rows * cols) * sizeof(float)});
  } else if (q.data) {
    const auto a = reinterpret_cast<uintptr_t>(q.data);
    const int64_t rb = qtype_row_bytes(q.type, cols);
    v->push_back({a, a + static_cast<uintptr_t>((rows - 1) * q.stride + rb)});
  }
}

}  // namespace

ExpertMemory model_expert_memory(const Model& m) {
  const ModelConfig& c = m.cfg;
  ExpertMemory r;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (const auto& [name, t] : m.archive.tensors) {
    if (t.name.find(".experts.") == std::string::npos && t.name.find("experts.") == std::string::npos)
      continue;
    if (t.name.find("_bias") != std::string::npos) continue;
    r.stored += static_cast<int64_t>(t.nbytes);
    const auto a = reinterpret_cast<uintptr_t>(t.data);
    ranges.push_back({a, a + t.nbytes});
  }
  for (const LayerWeights& lw : m.layers)
    for (const ExpertWeights& e : lw.experts) {
      add_range(&ranges, e.gate, e.gate_q, c.expert_ffn, c.hidden);
      add_range(&ranges, e.up, e.up_q, c.expert_ffn, c.hidden);
      add_range(&ranges, e.down, e.down_q, c.hidden, c.expert_ffn);
    }
  r.resident = resident_bytes(ranges);
  return r;
}

}  // namespace moe
