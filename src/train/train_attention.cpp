#include "train/train_attention.h"

#include <algorithm>
#include <cstring>

#include "ops/backend.h"
#include "ops/ops.h"

namespace moe {

namespace {

// q_a_layernorm / kv_a_layernorm are built with the default eps (as in the inference forward).
constexpr float kMlaNormEps = 1e-6f;

float* wr(const float* p) { return const_cast<float*>(p); }  // gradient views are writable

void add_into(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

int kv_heads(const ModelConfig& c) { return c.mla ? c.n_heads : c.n_kv_heads; }

// Rotates R dims of n_heads heads per token of every sequence, at column col of rows `stride`
// wide, heads `head_stride` apart; backward rotates by the opposite angle.
void rope_all(float* x, const TrainActs& a, int n_heads, int64_t stride, int head_stride, int R,
              RopeLayout layout, bool backward) {
  const Backend& be = backend();
  for (int b = 0; b < a.B; ++b) {
    float* xb = x + static_cast<int64_t>(b) * a.T * stride;
    if (backward)
      be.rope_backward(xb, a.T, n_heads, stride, head_stride, R, a.rope_cos.data(),
                       a.rope_sin.data(), layout);
    else
      be.rope(xb, a.T, n_heads, stride, head_stride, R, a.rope_cos.data(), a.rope_sin.data(),
              layout);
  }
}

// Attention of every sequence over la->q/k/v into la->att, probabilities saved.
void attend(LayerActs* la, TrainActs* a, const ModelConfig& c, const LayerWeights& w, int l) {
  const Backend& be = backend();
  const int T = a->T, H = c.n_heads, KVa = kv_heads(c), dq = c.qk_head_dim(), dv = c.v_dim();
  for (int b = 0; b < a->B; ++b) {
    const int64_t t0 = static_cast<int64_t>(b) * T;
    be.attention(la->att.data() + t0 * H * dv, la->q.data() + t0 * H * dq,
                 la->k.data() + t0 * KVa * dq, la->v.data() + t0 * KVa * dv, T, 0, H, KVa, dq, dv,
                 c.attn_scale, c.window[l], w.sinks, a->scores.data(),
                 la->probs.data() + t0 * H * T);
  }
}

// Backward of attend: a->datt (N, H*dv) -> a->dq, a->dk, a->dv; sink gradients into g.sinks.
void attend_backward(LayerActs* la, TrainActs* a, const ModelConfig& c, const LayerWeights& g,
                     int l) {
  const Backend& be = backend();
  const int T = a->T, H = c.n_heads, KVa = kv_heads(c), dq = c.qk_head_dim(), dv = c.v_dim();
  for (int b = 0; b < a->B; ++b) {
    const int64_t t0 = static_cast<int64_t>(b) * T;
    be.attention_backward(a->dq.data() + t0 * H * dq, a->dk.data() + t0 * KVa * dq,
                          a->dv.data() + t0 * KVa * dv, c.sinks ? wr(g.sinks) : nullptr,
                          a->datt.data() + t0 * H * dv, la->probs.data() + t0 * H * T,
                          la->q.data() + t0 * H * dq, la->k.data() + t0 * KVa * dq,
                          la->v.data() + t0 * KVa * dv, T, H, KVa, dq, dv, c.attn_scale,
                          c.window[l]);
  }
}

void gqa_forward(LayerActs* la, TrainActs* a, const ModelConfig& c, const LayerWeights& w) {
  const Backend& be = backend();
  const int N = a->B * a->T, D = c.hidden, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  const int64_t nq = static_cast<int64_t>(N) * H * hd, nk = static_cast<int64_t>(N) * KV * hd;
  const bool norm = c.qk_norm != QKNORM_NONE;
  be.linear_f32(norm ? la->q_raw.data() : la->q.data(), la->xn1.data(), w.q.w, w.q.b, N, H * hd, D);
  be.linear_f32(norm ? la->k_raw.data() : la->k.data(), la->xn1.data(), w.k.w, w.k.b, N, KV * hd, D);
  be.linear_f32(la->v.data(), la->xn1.data(), w.v.w, w.v.b, N, KV * hd, D);
  if (c.qk_norm == QKNORM_HEAD) {
    be.rmsnorm(la->q.data(), la->q_raw.data(), w.q_norm, N * H, hd, c.rms_eps);
    be.rmsnorm(la->k.data(), la->k_raw.data(), w.k_norm, N * KV, hd, c.rms_eps);
  } else if (c.qk_norm == QKNORM_FULL) {
    be.rmsnorm(la->q.data(), la->q_raw.data(), w.q_norm, N, H * hd, c.rms_eps);
    be.rmsnorm(la->k.data(), la->k_raw.data(), w.k_norm, N, KV * hd, c.rms_eps);
  }
  if (c.clip_qkv > 0) {  // after the q/k norm, as transformers' OLMoE does
    be.clamp(la->q.data(), nq, c.clip_qkv);
    be.clamp(la->k.data(), nk, c.clip_qkv);
    be.clamp(la->v.data(), nk, c.clip_qkv);
    std::copy(la->q.begin(), la->q.begin() + nq, la->q_pre.begin());
    std::copy(la->k.begin(), la->k.begin() + nk, la->k_pre.begin());
  }
  rope_all(la->q.data(), *a, H, static_cast<int64_t>(H) * hd, hd, hd, c.rope.layout, false);
  rope_all(la->k.data(), *a, KV, static_cast<int64_t>(KV) * hd, hd, hd, c.rope.layout, false);
}

// a->dq, a->dk, a->dv (after attend_backward) -> dx (N, D) = d xn1.
void gqa_backward(float* dx, LayerActs* la, TrainActs* a, const ModelConfig& c,
                  const LayerWeights& w, const LayerWeights& g) {
  const Backend& be = backend();
  const int N = a->B * a->T, D = c.hidden, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  const int64_t nq = static_cast<int64_t>(N) * H * hd, nk = static_cast<int64_t>(N) * KV * hd;
  rope_all(a->dq.data(), *a, H, static_cast<int64_t>(H) * hd, hd, hd, c.rope.layout, true);
  rope_all(a->dk.data(), *a, KV, static_cast<int64_t>(KV) * hd, hd, hd, c.rope.layout, true);
  if (c.clip_qkv > 0) {
    be.clamp_backward(a->dq.data(), la->q_pre.data(), nq, c.clip_qkv);
    be.clamp_backward(a->dk.data(), la->k_pre.data(), nk, c.clip_qkv);
    be.clamp_backward(a->dv.data(), la->v.data(), nk, c.clip_qkv);
  }
  const float* dq_raw = a->dq.data();
  const float* dk_raw = a->dk.data();
  if (c.qk_norm != QKNORM_NONE) {
    const bool head = c.qk_norm == QKNORM_HEAD;
    be.rmsnorm_backward(a->dq2.data(), wr(g.q_norm), a->dq.data(), la->q_raw.data(), w.q_norm,
                        head ? N * H : N, head ? hd : H * hd, c.rms_eps);
    be.rmsnorm_backward(a->dk2.data(), wr(g.k_norm), a->dk.data(), la->k_raw.data(), w.k_norm,
                        head ? N * KV : N, head ? hd : KV * hd, c.rms_eps);
    dq_raw = a->dq2.data();
    dk_raw = a->dk2.data();
  }
  const int64_t ND = static_cast<int64_t>(N) * D;
  be.linear_backward(dx, wr(g.q.w), wr(g.q.b), dq_raw, la->xn1.data(), w.q.w, N, H * hd, D);
  be.linear_backward(a->dx2.data(), wr(g.k.w), wr(g.k.b), dk_raw, la->xn1.data(), w.k.w, N,
                     KV * hd, D);
  add_into(dx, a->dx2.data(), ND);
  be.linear_backward(a->dx2.data(), wr(g.v.w), wr(g.v.b), a->dv.data(), la->xn1.data(), w.v.w, N,
                     KV * hd, D);
  add_into(dx, a->dx2.data(), ND);
}

void mla_forward(LayerActs* la, TrainActs* a, const ModelConfig& c, const LayerWeights& w) {
  const Backend& be = backend();
  const int N = a->B * a->T, D = c.hidden, H = c.n_heads, nope = c.qk_nope_dim;
  const int R = c.qk_rope_dim, dv = c.v_head_dim, Lc = c.kv_lora_rank, dq = nope + R;
  const int Lq = c.q_lora_rank;
  if (Lq > 0) {
    be.linear_f32(la->qa.data(), la->xn1.data(), w.q_a.w, w.q_a.b, N, Lq, D);
    be.rmsnorm(la->qa_n.data(), la->qa.data(), w.q_a_norm, N, Lq, kMlaNormEps);
    be.linear_f32(la->q.data(), la->qa_n.data(), w.q_b.w, nullptr, N, H * dq, Lq);
  } else {
    be.linear_f32(la->q.data(), la->xn1.data(), w.q.w, w.q.b, N, H * dq, D);
  }
  rope_all(la->q.data() + nope, *a, H, static_cast<int64_t>(H) * dq, dq, R, c.rope.layout, false);
  be.linear_f32(la->ckv.data(), la->xn1.data(), w.kv_a.w, w.kv_a.b, N, Lc + R, D);
  float* kpe = a->kpe.data();  // (N, R) shared rope key
  for (int64_t t = 0; t < N; ++t) {
    const float* row = la->ckv.data() + t * (Lc + R);
    std::copy(row, row + Lc, la->c_raw.data() + t * Lc);
    std::copy(row + Lc, row + Lc + R, kpe + t * R);
  }
  be.rmsnorm(la->c_n.data(), la->c_raw.data(), w.kv_a_norm, N, Lc, kMlaNormEps);
  rope_all(kpe, *a, 1, R, R, R, c.rope.layout, false);
  const int W = nope + dv;
  be.linear_f32(a->kvb.data(), la->c_n.data(), w.kv_b.w, nullptr, N, H * W, Lc);
  for (int64_t t = 0; t < N; ++t) {
    for (int h = 0; h < H; ++h) {
      const float* src = a->kvb.data() + (t * H + h) * W;
      float* k = la->k.data() + (t * H + h) * dq;
      std::copy(src, src + nope, k);
      std::copy(kpe + t * R, kpe + (t + 1) * R, k + nope);
      std::copy(src + nope, src + W, la->v.data() + (t * H + h) * dv);
    }
  }
}

// a->dq, a->dk, a->dv (after attend_backward) -> dx (N, D) = d xn1.
void mla_backward(float* dx, LayerActs* la, TrainActs* a, const ModelConfig& c,
                  const LayerWeights& w, const LayerWeights& g) {
  const Backend& be = backend();
  const int N = a->B * a->T, D = c.hidden, H = c.n_heads, nope = c.qk_nope_dim;
  const int R = c.qk_rope_dim, dv = c.v_head_dim, Lc = c.kv_lora_rank, dq = nope + R;
  const int Lq = c.q_lora_rank, W = nope + dv;
  rope_all(a->dq.data() + nope, *a, H, static_cast<int64_t>(H) * dq, dq, R, c.rope.layout, true);
  float* dkpe = a->kpe.data();  // (N, R): the shared rope key's gradient, summed over heads
  std::fill(dkpe, dkpe + static_cast<int64_t>(N) * R, 0.0f);
  for (int64_t t = 0; t < N; ++t) {
    for (int h = 0; h < H; ++h) {
      const float* dk = a->dk.data() + (t * H + h) * dq;
      float* dst = a->kvb.data() + (t * H + h) * W;
      std::copy(dk, dk + nope, dst);
      add_into(dkpe + t * R, dk + nope, R);
      const float* dvh = a->dv.data() + (t * H + h) * dv;
      std::copy(dvh, dvh + dv, dst + nope);
    }
  }
  rope_all(dkpe, *a, 1, R, R, R, c.rope.layout, true);
  float* dcn = a->dc.data();                                   // (N, Lc) d c_n
  float* dcr = a->dc.data() + static_cast<int64_t>(N) * Lc;  // (N, Lc) d c_raw
  be.linear_backward(dcn, wr(g.kv_b.w), nullptr, a->kvb.data(), la->c_n.data(), w.kv_b.w, N,
                     H * W, Lc);
  be.rmsnorm_backward(dcr, wr(g.kv_a_norm), dcn, la->c_raw.data(), w.kv_a_norm, N, Lc,
                      kMlaNormEps);
  for (int64_t t = 0; t < N; ++t) {
    float* row = a->dckv.data() + t * (Lc + R);
    std::copy(dcr + t * Lc, dcr + (t + 1) * Lc, row);
    std::copy(dkpe + t * R, dkpe + (t + 1) * R, row + Lc);
  }
  be.linear_backward(dx, wr(g.kv_a.w), wr(g.kv_a.b), a->dckv.data(), la->xn1.data(), w.kv_a.w, N,
                     Lc + R, D);
  if (Lq > 0) {
    be.linear_backward(a->dqa.data(), wr(g.q_b.w), nullptr, a->dq.data(), la->qa_n.data(),
                       w.q_b.w, N, H * dq, Lq);
    be.rmsnorm_backward(a->dqa2.data(), wr(g.q_a_norm), a->dqa.data(), la->qa.data(),
                        w.q_a_norm, N, Lq, kMlaNormEps);
    be.linear_backward(a->dx2.data(), wr(g.q_a.w), wr(g.q_a.b), a->dqa2.data(), la->xn1.data(),
                       w.q_a.w, N, Lq, D);
  } else {
    be.linear_backward(a->dx2.data(), wr(g.q.w), wr(g.q.b), a->dq.data(), la->xn1.data(), w.q.w,
                       N, H * dq, D);
  }
  add_into(dx, a->dx2.data(), static_cast<int64_t>(N) * D);
}

}  // namespace

void attn_acts_init(LayerActs* la, const ModelConfig& c, int64_t N, int T) {
  const int64_t H = c.n_heads, KVa = kv_heads(c), dq = c.qk_head_dim(), dv = c.v_dim();
  if (c.mla) {
    const int64_t Lc = c.kv_lora_rank, R = c.qk_rope_dim, Lq = c.q_lora_rank;
    la->qa.assign(N * Lq, 0.0f);
    la->qa_n.assign(N * Lq, 0.0f);
    la->ckv.assign(N * (Lc + R), 0.0f);
    la->c_raw.assign(N * Lc, 0.0f);
    la->c_n.assign(N * Lc, 0.0f);
  } else {
    const bool norm = c.qk_norm != QKNORM_NONE, clip = c.clip_qkv > 0;
    la->q_raw.assign(norm ? N * H * dq : 0, 0.0f);
    la->k_raw.assign(norm ? N * KVa * dq : 0, 0.0f);
    la->q_pre.assign(clip ? N * H * dq : 0, 0.0f);
    la->k_pre.assign(clip ? N * KVa * dq : 0, 0.0f);
  }
  la->q.assign(N * H * dq, 0.0f);
  la->k.assign(N * KVa * dq, 0.0f);
  la->v.assign(N * KVa * dv, 0.0f);
  la->probs.assign(N * H * T, 0.0f);
  la->att.assign(N * H * dv, 0.0f);
}

void attn_scratch_init(TrainActs* a, const ModelConfig& c, int64_t N) {
  const int64_t H = c.n_heads, KVa = kv_heads(c), dq = c.qk_head_dim(), dv = c.v_dim();
  const int64_t D = c.hidden;
  a->dx2.assign(N * D, 0.0f);
  a->dq.assign(N * H * dq, 0.0f);
  a->dq2.assign(c.qk_norm != QKNORM_NONE ? N * H * dq : 0, 0.0f);
  a->dk.assign(N * KVa * dq, 0.0f);
  a->dk2.assign(c.qk_norm != QKNORM_NONE ? N * KVa * dq : 0, 0.0f);
  a->dv.assign(N * KVa * dv, 0.0f);
  a->datt.assign(N * H * dv, 0.0f);
  if (c.mla) {
    const int64_t Lc = c.kv_lora_rank, R = c.qk_rope_dim, Lq = c.q_lora_rank;
    a->kvb.assign(N * H * (c.qk_nope_dim + dv), 0.0f);
    a->kpe.assign(N * R, 0.0f);
    a->dc.assign(2 * N * Lc, 0.0f);
    a->dckv.assign(N * (Lc + R), 0.0f);
    a->dqa.assign(N * Lq, 0.0f);
    a->dqa2.assign(N * Lq, 0.0f);
  }
}

void attn_train_forward(float* out, LayerActs* la, TrainActs* a, const ModelConfig& c,
                        const LayerWeights& w, int l) {
  const Backend& be = backend();
  if (c.mla) mla_forward(la, a, c, w);
  else gqa_forward(la, a, c, w);
  attend(la, a, c, w, l);
  const int N = a->B * a->T;
  be.linear_f32(out, la->att.data(), w.o.w, w.o.b, N, c.hidden, c.n_heads * c.v_dim());
}

void attn_train_backward(float* dx, LayerActs* la, TrainActs* a, const ModelConfig& c,
                         const LayerWeights& w, const LayerWeights& g, const float* dout, int l) {
  const Backend& be = backend();
  const int N = a->B * a->T;
  be.linear_backward(a->datt.data(), wr(g.o.w), wr(g.o.b), dout, la->att.data(), w.o.w, N,
                     c.hidden, c.n_heads * c.v_dim());
  attend_backward(la, a, c, g, l);
  if (c.mla) mla_backward(dx, la, a, c, w, g);
  else gqa_backward(dx, la, a, c, w, g);
}

}  // namespace moe
