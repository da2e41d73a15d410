#include "model/gguf_export.h"

#include <cstring>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "text/gguf_tokenizer_write.h"

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

  // MLA's kv_b_proj (H*(nope+v), kv_lora), fp32 at load, in llama.cpp's split form: attn_k_b
  // ne [nope, kv_lora, H] (each head's key rows transposed) and attn_v_b ne [kv_lora, v, H].
  void kv_b_split(const std::string& B, const Linear& kv_b) {
    const ModelConfig& c = m.cfg;
    const int64_t H = c.n_heads, nope = c.qk_nope_dim, v = c.v_head_dim, r = c.kv_lora_rank;
    MOE_CHECK(kv_b.w && kv_b.out == H * (nope + v) && kv_b.in == r);
    owned.emplace_back(static_cast<size_t>(H * nope * r) * 4);
    float* kb = reinterpret_cast<float*>(owned.back().data());  // (H, r, nope)
    owned.emplace_back(static_cast<size_t>(H * v * r) * 4);
    float* vb = reinterpret_cast<float*>(owned.back().data());  // (H, v, r)
    for (int64_t h = 0; h < H; ++h) {
      const float* wh = kv_b.w + h * (nope + v) * r;  // (nope + v, r)
      for (int64_t j = 0; j < nope; ++j)
        for (int64_t i = 0; i < r; ++i) kb[(h * r + i) * nope + j] = wh[j * r + i];
      std::memcpy(vb + h * v * r, wh + nope * r, sizeof(float) * static_cast<size_t>(v * r));
    }
    tensors.push_back({B + "attn_k_b.weight", QT_F32, {nope, r, H}, kb});
    tensors.push_back({B + "attn_v_b.weight", QT_F32, {r, v, H}, vb});
  }

  void mla(const std::string& B, const LayerWeights& lw) {
    const ModelConfig& c = m.cfg;
    if (c.q_lora_rank > 0) {
      linear(B + "attn_q_a", lw.q_a);
      f32(B + "attn_q_a_norm.weight", lw.q_a_norm, {c.q_lora_rank});
      linear(B + "attn_q_b", lw.q_b);
    } else {
      linear(B + "attn_q", lw.q);
    }
    linear(B + "attn_kv_a_mqa", lw.kv_a);
    f32(B + "attn_kv_a_norm.weight", lw.kv_a_norm, {c.kv_lora_rank});
    kv_b_split(B, lw.kv_b);
    linear(B + "attn_output", lw.o);
  }

  // The routed experts' biases of one kind (0 gate, 1 up, 2 down) as one (E, n) tensor.
  void expert_biases(const std::string& name, const std::vector<ExpertWeights>& ex, int which,
                     int64_t n) {
    owned.emplace_back(ex.size() * static_cast<size_t>(n) * 4);
    float* dst = reinterpret_cast<float*>(owned.back().data());  // (E, n)
    for (size_t e = 0; e < ex.size(); ++e) {
      const float* b = which == 0 ? ex[e].gate_b : which == 1 ? ex[e].up_b : ex[e].down_b;
      MOE_CHECK(b);
      std::memcpy(dst + e * n, b, sizeof(float) * static_cast<size_t>(n));
    }
    tensors.push_back({name, QT_F32, {n, static_cast<int64_t>(ex.size())}, dst});
  }

  // gpt-oss: attention with biases and sinks, post_attention_norm, a router with a bias, expert
  // biases.
  void oss_layer(int l) {
    const ModelConfig& c = m.cfg;
    const LayerWeights& lw = m.layers[l];
    const std::string B = "blk." + std::to_string(l) + ".";
    const int64_t D = c.hidden, F = c.expert_ffn;
    f32(B + "attn_norm.weight", lw.attn_norm, {D});
    f32(B + "post_attention_norm.weight", lw.ffn_norm, {D});
    linear(B + "attn_q", lw.q);
    linear(B + "attn_k", lw.k);
    linear(B + "attn_v", lw.v);
    linear(B + "attn_output", lw.o);
    f32(B + "attn_sinks.weight", lw.sinks, {c.n_heads});
    linear(B + "ffn_gate_inp", lw.router);
    const char* kinds[] = {"gate", "up", "down"};
    for (int k = 0; k < 3; ++k) {
      const std::string name = B + "ffn_" + kinds[k] + "_exps";
      experts(name, lw.experts, k, k < 2 ? F : D, k < 2 ? D : F);
      expert_biases(name + ".bias", lw.experts, k, k < 2 ? F : D);
    }
  }

  void layer(int l) {
    const ModelConfig& c = m.cfg;
    if (c.arch == ARCH_GPT_OSS) return oss_layer(l);
    const LayerWeights& lw = m.layers[l];
    const std::string B = "blk." + std::to_string(l) + ".";
    const bool llama = c.arch == ARCH_MIXTRAL;
    const int64_t D = c.hidden;
    f32(B + "attn_norm.weight", lw.attn_norm, {D});
    f32(B + "ffn_norm.weight", lw.ffn_norm, {D});
    if (c.mla) {
      mla(B, lw);
      return ffn(l, B);
    }
    linear(B + "attn_q", lw.q, llama ? c.n_heads : 0);
    linear(B + "attn_k", lw.k, llama ? c.n_kv_heads : 0);
    linear(B + "attn_v", lw.v);
    linear(B + "attn_output", lw.o);
    const int64_t qn = c.qk_norm == QKNORM_HEAD ? c.head_dim : static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int64_t kn = c.qk_norm == QKNORM_HEAD ? c.head_dim : static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    f32(B + "attn_q_norm.weight", lw.q_norm, {qn});
    f32(B + "attn_k_norm.weight", lw.k_norm, {kn});
    ffn(l, B);
  }

  void ffn(int l, const std::string& B) {
    const ModelConfig& c = m.cfg;
    const LayerWeights& lw = m.layers[l];
    const int64_t D = c.hidden, F = c.expert_ffn;
    if (!c.is_moe[l]) return mlp(B, lw.mlp, "");  // ffn_gate / ffn_up / ffn_down
    linear(B + "ffn_gate_inp", lw.router);
    f32(B + "exp_probs_b.bias", lw.e_bias, {c.n_experts});
    experts(B + "ffn_gate_exps", lw.experts, 0, F, D);
    experts(B + "ffn_up_exps", lw.experts, 1, F, D);
    experts(B + "ffn_down_exps", lw.experts, 2, D, F);
    if (c.shared_ffn > 0) mlp(B, lw.shared, "_shexp");
    if (lw.shared_gate.out > 0) f32(B + "ffn_gate_inp_shexp.weight", lw.shared_gate.w, {D});
  }
};

// DeepSeek-V2 / V3 as llama.cpp's deepseek2 has them: MLA, softmax greedy or group-limited
// routing (V2), sigmoid routing with a selection bias and top-2-sum groups (V3), YaRN with one
// mscale.
const char* deepseek_checked(const ModelConfig& c) {
  const RouterSpec& r = c.router;
  const bool v3 = c.arch == ARCH_DEEPSEEK_V3;
  if (!c.mla || r.kind != ROUTER_TOKEN_CHOICE || r.score != (v3 ? SCORE_SIGMOID : SCORE_SOFTMAX) ||
      r.has_correction_bias != v3 || r.topk_then_softmax || r.has_bias)
    fail("%s: this DeepSeek attention or router cannot be exported to GGUF", c.path.c_str());
  if (c.rope.layout != ROPE_INTERLEAVED)  // what deepseek2 files hold (gguf_model.h)
    fail("%s: rope_interleave false cannot be exported to GGUF", c.path.c_str());
  if (c.rope.type == "yarn" && c.rope.mscale != c.rope.mscale_all_dim)
    fail("%s: YaRN with mscale %g != mscale_all_dim %g cannot be exported to GGUF (llama.cpp "
         "keeps one)", c.path.c_str(), c.rope.mscale, c.rope.mscale_all_dim);
  if (c.rope.type != "default" && c.rope.type != "yarn")
    fail("%s: rope type %s cannot be exported to GGUF yet", c.path.c_str(), c.rope.type.c_str());
  return "deepseek2";
}

// gpt-oss as llama.cpp's gpt-oss reads it: sliding windows on even layers only, sinks, YaRN (or
// none) without mscale, the clamped SwiGLU with gpt-oss's constants, top-k-then-softmax routing
// with a router bias.
const char* gpt_oss_checked(const ModelConfig& c) {
  bool pattern = c.n_layers > 0 && c.window[0] > 0;
  for (int l = 0; l < c.n_layers; ++l)
    pattern &= (l % 2 == 0) == (c.window[l] > 0) && c.window[l] == (l % 2 == 0 ? c.window[0] : 0);
  const RopeSpec& r = c.rope;
  const bool rope_ok = r.type == "default" || (r.type == "yarn" && r.mscale == 0.0 &&
                                               r.mscale_all_dim == 0.0 && !r.truncate &&
                                               r.beta_fast == 32.0 && r.beta_slow == 1.0);
  if (!pattern || !rope_ok || !c.sinks || c.act != ACT_SWIGLU_OAI || c.act_alpha != 1.702f ||
      c.act_limit != 7.0f || !c.router.topk_then_softmax || !c.router.has_bias || !c.expert_bias)
    fail("%s: this gpt-oss variant (windows, rope, activation or router) cannot be exported to "
         "GGUF", c.path.c_str());
  return "gpt-oss";
}

// The architecture name and the features llama.cpp's version of it lacks.
const char* gguf_arch_of(const ModelConfig& c) {
  const bool ds = c.arch == ARCH_DEEPSEEK_V2 || c.arch == ARCH_DEEPSEEK_V3;
  const char* a = c.arch == ARCH_QWEN3_MOE   ? "qwen3moe"
                  : c.arch == ARCH_QWEN2_MOE ? "qwen2moe"
                  : c.arch == ARCH_OLMOE     ? "olmoe"
                  : c.arch == ARCH_MIXTRAL   ? "llama"
                  : ds                       ? "deepseek2"
                  : c.arch == ARCH_GPT_OSS   ? "gpt-oss"
                                             : nullptr;
  if (!a)
    fail("%s: model_type %s cannot be exported to GGUF yet (supported: qwen3_moe, qwen2_moe, "
         "olmoe, mixtral, deepseek_v2, deepseek_v3, gpt_oss)", c.path.c_str(), arch_name(c.arch));
  if (ds) return deepseek_checked(c);
  if (c.arch == ARCH_GPT_OSS) return gpt_oss_checked(c);
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

// deepseek2's keys, in the MLA form of llama.cpp's converter: key/value lengths of the absorbed
// (MQA) attention, the per-head ones as *_mla, one KV head.
void write_deepseek_kv(Exporter* x, const std::string& A) {
  const ModelConfig& c = x->m.cfg;
  auto& kv = x->kv;
  for (auto& e : kv)
    if (e.first == A + "attention.key_length") e.second = u32(c.kv_lora_rank + c.qk_rope_dim);
    else if (e.first == A + "attention.value_length") e.second = u32(c.kv_lora_rank);
    else if (e.first == A + "attention.head_count_kv") e.second = u32(1);
  kv.push_back({A + "attention.key_length_mla", u32(c.qk_nope_dim + c.qk_rope_dim)});
  kv.push_back({A + "attention.value_length_mla", u32(c.v_head_dim)});
  kv.push_back({A + "attention.kv_lora_rank", u32(c.kv_lora_rank)});
  if (c.q_lora_rank > 0) kv.push_back({A + "attention.q_lora_rank", u32(c.q_lora_rank)});
  int dense = 0;
  while (dense < c.n_layers && !c.is_moe[dense]) ++dense;
  kv.push_back({A + "leading_dense_block_count", u32(dense)});
  const int shared = c.expert_ffn > 0 ? c.shared_ffn / c.expert_ffn : 0;
  kv.push_back({A + "expert_shared_count", u32(shared)});
  kv.push_back({A + "expert_weights_scale", f32v(c.router.scale)});
  kv.push_back({A + "expert_gating_func", u32(c.router.score == SCORE_SIGMOID ? 2 : 1)});
  kv.push_back({A + "expert_group_count", u32(c.router.n_group)});
  kv.push_back({A + "expert_group_used_count", u32(c.router.topk_group)});
  if (c.rope.type != "yarn") return;
  kv.push_back({A + "rope.scaling.type", strv("yarn")});
  kv.push_back({A + "rope.scaling.factor", f32v(c.rope.factor)});
  kv.push_back({A + "rope.scaling.original_context_length",
                u32(static_cast<int64_t>(c.rope.orig_max_pos))});
  kv.push_back({A + "rope.scaling.yarn_beta_fast", f32v(c.rope.beta_fast)});
  kv.push_back({A + "rope.scaling.yarn_beta_slow", f32v(c.rope.beta_slow)});
  kv.push_back({A + "rope.scaling.yarn_log_multiplier", f32v(0.1 * c.rope.mscale_all_dim)});
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
  if (c.mla) write_deepseek_kv(x, A);
  if (c.arch == ARCH_GPT_OSS) {
    kv.push_back({A + "attention.sliding_window", u32(c.window[0])});
    if (c.rope.type == "yarn") {
      kv.push_back({A + "rope.scaling.type", strv("yarn")});
      kv.push_back({A + "rope.scaling.factor", f32v(c.rope.factor)});
      kv.push_back({A + "rope.scaling.original_context_length",
                    u32(static_cast<int64_t>(c.rope.orig_max_pos))});
    }
  }
  if (c.bos_id >= 0) kv.push_back({"tokenizer.ggml.bos_token_id", u32(c.bos_id)});
  if (!c.eos_ids.empty()) kv.push_back({"tokenizer.ggml.eos_token_id", u32(c.eos_ids[0])});
}

}  // namespace

bool gguf_export(const Model& m, const std::string& path, const std::string& tokenizer_dir) {
  const ModelConfig& c = m.cfg;
  const char* arch = gguf_arch_of(c);
  Exporter x{m, {}, {}, {}};
  write_kv(&x, arch);
  const std::string tok = tokenizer_dir + "/tokenizer.json";
  const bool with_tok = !tokenizer_dir.empty() && file_exists(tok);
  if (with_tok)
    gguf_tokenizer_kv(read_text_file(tok), tok, c.vocab, hf_chat_template(tokenizer_dir), &x.kv);
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
  return with_tok;
}

}  // namespace moe
