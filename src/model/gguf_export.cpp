#include "model/gguf_export.h"

#include <cstring>

#include "core/error.h"
#include "io/gguf.h"

namespace moe {

namespace {

GgufValue scalar(GgufType t, int64_t i, double f = 0.0, const std::string& str = "") {
  GgufValue x;
  x.type = t;
  x.i = i;
  x.f = f;
  x.s = str;
  return x;
}
GgufValue u32(int64_t v) { return scalar(GGUF_U32, v); }
GgufValue f32v(double v) { return scalar(GGUF_F32, 0, v); }
GgufValue strv(const std::string& s) { return scalar(GGUF_STRING, 0, 0.0, s); }
GgufValue boolv(bool b) { return scalar(GGUF_BOOL, b ? 1 : 0); }

struct Exporter {
  const Model& m;
  std::vector<std::pair<std::string, GgufValue>> kv;
  std::vector<GgufWriteTensor> tensors;
  // Copied / permuted tensor data; the buffers stay in place when the outer vector grows.
  std::vector<std::vector<uint8_t>> owned;

  void f32(const std::string& name, const float* p, std::vector<int64_t> ne) {
    if (p) tensors.push_back({name, QT_F32, std::move(ne), p});
  }

  // Rows of a matrix (rows, cols) stored fp32 (w) or raw (q), into one contiguous buffer of its
  // type, row r taken from source row src_row(r).
  template <class RowMap>
  QType copy_rows(const float* w, const QWeight& q, int64_t rows, int64_t cols, RowMap src_row,
                  std::vector<uint8_t>* out) {
    const QType t = w ? QT_F32 : q.type;
    const int64_t rb = qtype_row_bytes(t, cols);
    const size_t base = out->size();
    out->resize(base + static_cast<size_t>(rows * rb));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t s = src_row(r);
      const uint8_t* src = w ? reinterpret_cast<const uint8_t*>(w + s * cols) : q.data + s * q.stride;
      std::memcpy(out->data() + base + r * rb, src, static_cast<size_t>(rb));
    }
    return t;
  }

  // A linear layer's weight (and bias); n_head > 0 permutes its rows for llama's rope.
  void linear(const std::string& name, const Linear& l, int n_head = 0) {
    owned.emplace_back();
    const int64_t hd = n_head > 0 ? l.out / n_head : 0, half = hd / 2;
    auto map = [&](int64_t r) {  // GGUF row (h, i, j) holds Hugging Face row (h, j, i)
      if (n_head == 0) return r;
      const int64_t h = r / hd, i = (r % hd) / 2, j = r % 2;
      return h * hd + j * half + i;
    };
    const QType t = copy_rows(l.w, l.q, l.out, l.in, map, &owned.back());
    tensors.push_back({name + ".weight", t, {l.in, l.out}, owned.back().data()});
    f32(name + ".bias", l.b, {l.out});
  }

  void experts(const std::string& name, const std::vector<ExpertWeights>& ex, int which,
               int64_t rows, int64_t cols) {
    owned.emplace_back();
    QType t = QT_F32;
    for (size_t e = 0; e < ex.size(); ++e) {
      const ExpertWeights& x = ex[e];
      const float* w = which == 0 ? x.gate : which == 1 ? x.up : x.down;
      const QWeight& q = which == 0 ? x.gate_q : which == 1 ? x.up_q : x.down_q;
      const QType te = copy_rows(w, q, rows, cols, [](int64_t r) { return r; }, &owned.back());
      if (e > 0 && te != t)
        fail("%s: experts of one layer are stored in different types (%s, %s)", name.c_str(),
             qtype_name(t), qtype_name(te));
      t = te;
    }
    tensors.push_back({name + ".weight", t, {cols, rows, static_cast<int64_t>(ex.size())},
                       owned.back().data()});
  }

  void mlp(const std::string& B, const MlpWeights& w, const char* suffix) {
    linear(B + "ffn_gate" + suffix, w.gate);
    linear(B + "ffn_up" + suffix, w.up);
    linear(B + "ffn_down" + suffix, w.down);
  }

  void layer(int l) {
    const ModelConfig& c = m.cfg;
    const LayerWeights& lw = m.layers[l];
    const std::string B = "blk." + std::to_string(l) + ".";
    const bool llama = c.arch == ARCH_MIXTRAL;
    const int64_t D = c.hidden, F = c.expert_ffn;
    f32(B + "attn_norm.weight", lw.attn_norm, {D});
    f32(B + "ffn_norm.weight", lw.ffn_norm, {D});
    linear(B + "attn_q", lw.q, llama ? c.n_heads : 0);
    linear(B + "attn_k", lw.k, llama ? c.n_kv_heads : 0);
    linear(B + "attn_v", lw.v);
    linear(B + "attn_output", lw.o);
    const int64_t qn = c.qk_norm == QKNORM_HEAD ? c.head_dim : static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int64_t kn = c.qk_norm == QKNORM_HEAD ? c.head_dim : static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    f32(B + "attn_q_norm.weight", lw.q_norm, {qn});
    f32(B + "attn_k_norm.weight", lw.k_norm, {kn});
    if (!c.is_moe[l]) return mlp(B, lw.mlp, "");  // ffn_gate / ffn_up / ffn_down
    linear(B + "ffn_gate_inp", lw.router);
    experts(B + "ffn_gate_exps", lw.experts, 0, F, D);
    experts(B + "ffn_up_exps", lw.experts, 1, F, D);
    experts(B + "ffn_down_exps", lw.experts, 2, D, F);
    if (c.shared_ffn > 0) mlp(B, lw.shared, "_shexp");
    if (lw.shared_gate.out > 0) f32(B + "ffn_gate_inp_shexp.weight", lw.shared_gate.w, {D});
  }
};

// The architecture name and the features llama.cpp's version of it lacks.
const char* gguf_arch_of(const ModelConfig& c) {
  const char* a = c.arch == ARCH_QWEN3_MOE   ? "qwen3moe"
                  : c.arch == ARCH_QWEN2_MOE ? "qwen2moe"
                  : c.arch == ARCH_OLMOE     ? "olmoe"
                  : c.arch == ARCH_MIXTRAL   ? "llama"
                                             : nullptr;
  if (!a)
    fail("%s: model_type %s cannot be exported to GGUF yet (supported: qwen3_moe, qwen2_moe, "
         "olmoe, mixtral)", c.path.c_str(), arch_name(c.arch));
  if (c.rope.type != "default")
    fail("%s: rope type %s cannot be exported to GGUF yet", c.path.c_str(), c.rope.type.c_str());
  for (int w : c.window)
    if (w != 0) fail("%s: sliding-window attention cannot be exported to GGUF yet", c.path.c_str());
  if (c.clip_qkv > 0 || c.sinks || c.shared_gate != (c.arch == ARCH_QWEN2_MOE && c.shared_ffn > 0))
    fail("%s: clip_qkv, sinks or this shared-expert gate cannot be exported to GGUF yet",
         c.path.c_str());
  if (c.router.kind != ROUTER_TOKEN_CHOICE || c.router.score != SCORE_SOFTMAX)
    fail("%s: this router cannot be exported to GGUF yet", c.path.c_str());
  return a;
}

void write_kv(Exporter* x, const std::string& arch) {
  const ModelConfig& c = x->m.cfg;
  const std::string A = arch + ".";
  auto& kv = x->kv;
  kv.push_back({"general.architecture", strv(arch)});
  kv.push_back({A + "block_count", u32(c.n_layers)});
  kv.push_back({A + "context_length", u32(c.max_pos)});
  kv.push_back({A + "embedding_length", u32(c.hidden)});
  kv.push_back({A + "feed_forward_length", u32(c.dense_ffn > 0 ? c.dense_ffn : c.expert_ffn)});
  kv.push_back({A + "expert_feed_forward_length", u32(c.expert_ffn)});
  if (c.shared_ffn > 0) kv.push_back({A + "expert_shared_feed_forward_length", u32(c.shared_ffn)});
  kv.push_back({A + "attention.head_count", u32(c.n_heads)});
  kv.push_back({A + "attention.head_count_kv", u32(c.n_kv_heads)});
  kv.push_back({A + "attention.key_length", u32(c.head_dim)});
  kv.push_back({A + "attention.value_length", u32(c.head_dim)});
  kv.push_back({A + "attention.layer_norm_rms_epsilon", f32v(c.rms_eps)});
  kv.push_back({A + "rope.freq_base", f32v(c.rope.theta)});
  kv.push_back({A + "rope.dimension_count", u32(c.rope.dim)});
  kv.push_back({A + "expert_count", u32(c.n_experts)});
  kv.push_back({A + "expert_used_count", u32(c.top_k)});
  kv.push_back({A + "expert_weights_norm", boolv(c.router.norm_topk)});
  if (c.bos_id >= 0) kv.push_back({"tokenizer.ggml.bos_token_id", u32(c.bos_id)});
  if (!c.eos_ids.empty()) kv.push_back({"tokenizer.ggml.eos_token_id", u32(c.eos_ids[0])});
}

}  // namespace

void gguf_export(const Model& m, const std::string& path) {
  const ModelConfig& c = m.cfg;
  const char* arch = gguf_arch_of(c);
  Exporter x{m, {}, {}, {}};
  write_kv(&x, arch);
  const int64_t V = c.vocab, D = c.hidden;
  x.f32("token_embd.weight", m.embed, {D, V});
  x.f32("output_norm.weight", m.final_norm, {D});
  if (!c.tie_embeddings) {
    Linear head;
    head.w = m.lm_head, head.q = m.lm_head_q, head.out = c.vocab, head.in = c.hidden;
    x.linear("output", head);
  }
  for (int l = 0; l < c.n_layers; ++l) x.layer(l);
  gguf_write(path, x.kv, x.tensors);
}

}  // namespace moe
