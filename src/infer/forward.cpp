#include "infer/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "moe/expert_cache.h"
#include "ops/backend.h"
#include "ops/router.h"

namespace moe {

void infer_state_init(InferState* s, const Model& m, int T_max, int ctx) {
  const ModelConfig& c = m.cfg;
  MOE_CHECK(T_max > 0 && ctx > 0);
  const int64_t D = c.hidden, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  const int64_t dq = c.qk_head_dim(), dv = c.v_dim(), R = c.rope.dim;
  const int64_t Lc = c.kv_lora_rank;
  s->T_max = T_max;
  s->ctx = ctx;
  s->pos = 0;
  s->cache.assign(c.n_layers + c.mtp_layers, LayerCache());  // the MTP modules' blocks last
  for (LayerCache& lc : s->cache) {
    if (c.mla) {
      lc.k.assign(ctx * Lc, 0.0f);
      lc.v.assign(ctx * R, 0.0f);
    } else {
      lc.k.assign(ctx * KV * hd, 0.0f);
      lc.v.assign(ctx * KV * hd, 0.0f);
    }
  }
  s->h.assign(T_max * D, 0.0f);
  s->xn.assign(T_max * D, 0.0f);
  s->q.assign(T_max * H * dq, 0.0f);
  s->att.assign(T_max * H * dv, 0.0f);
  s->proj.assign(T_max * D, 0.0f);
  if (c.mla) {
    s->qa.assign(T_max * std::max(c.q_lora_rank, 1), 0.0f);
    s->ckv.assign(T_max * (Lc + R), 0.0f);
    s->qlat.assign(T_max * H * Lc, 0.0f);
    s->qpe.assign(T_max * H * R, 0.0f);
    s->olat.assign(T_max * H * Lc, 0.0f);
  } else {
    s->k.assign(T_max * KV * hd, 0.0f);
    s->v.assign(T_max * KV * hd, 0.0f);
  }
  s->rope_cos.assign(T_max * R / 2, 0.0f);
  s->rope_sin.assign(T_max * R / 2, 0.0f);
  s->scores.assign(backend().attention_scratch(ctx), 0.0f);
  s->logits.assign(T_max * static_cast<int64_t>(c.vocab), 0.0f);
  s->ids.assign(T_max, 0);
  ffn_scratch_init(&s->ffn, c, T_max);
  // Under mpirun the experts are spread over the ranks, which all run the same tokens.
  moe_state_enable_ep(&s->ffn, c, &comm_ep(), true);
  if (c.mtp_layers > 0) s->mtp_cat.assign(T_max * 2 * D, 0.0f);
  int64_t K_max = c.mtp_layers > 0 ? 2 * D : D;  // widest input of an attention matrix (eh_proj)
  for (const LayerWeights& lw : m.layers)
    for (const Linear* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.q_a, &lw.q_b, &lw.kv_a})
      K_max = std::max<int64_t>(K_max, l->in);
  linear_scratch_init(&s->lin, K_max);
}

namespace {

void attention_gqa(const Model& m, InferState* s, int l, const SeqSpan* seqs, int n_seqs, int T) {
  const Backend& be = backend();
  const ModelConfig& c = m.cfg;
  const LayerWeights& lw = m.layers[l];
  const int H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  float* q = s->q.data();  // (T, H, hd)
  float* k = s->k.data();  // (T, KV, hd)
  float* v = s->v.data();  // (T, KV, hd)
  be.linear(q, s->xn.data(), lw.q, T, &s->lin);
  be.linear(k, s->xn.data(), lw.k, T, &s->lin);
  be.linear(v, s->xn.data(), lw.v, T, &s->lin);
  if (c.qk_norm == QKNORM_FULL) {
    be.rmsnorm(q, q, lw.q_norm, T, H * hd, c.rms_eps);
    be.rmsnorm(k, k, lw.k_norm, T, KV * hd, c.rms_eps);
  } else if (c.qk_norm == QKNORM_HEAD) {
    be.rmsnorm(q, q, lw.q_norm, T * H, hd, c.rms_eps);
    be.rmsnorm(k, k, lw.k_norm, T * KV, hd, c.rms_eps);
  }
  if (c.clip_qkv > 0) {
    be.clamp(q, static_cast<int64_t>(T) * H * hd, c.clip_qkv);
    be.clamp(k, static_cast<int64_t>(T) * KV * hd, c.clip_qkv);
    be.clamp(v, static_cast<int64_t>(T) * KV * hd, c.clip_qkv);
  }
  be.rope(q, T, H, static_cast<int64_t>(H) * hd, hd, hd, s->rope_cos.data(), s->rope_sin.data(),
          c.rope.layout);
  be.rope(k, T, KV, static_cast<int64_t>(KV) * hd, hd, hd, s->rope_cos.data(), s->rope_sin.data(),
          c.rope.layout);
  const int64_t row = static_cast<int64_t>(KV) * hd;
  for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n, ++i) {
    LayerCache& lc = seqs[i].cache[l];
    const int pos = seqs[i].pos, n = seqs[i].n;
    std::memcpy(lc.k.data() + pos * row, k + t0 * row, sizeof(float) * n * row);
    std::memcpy(lc.v.data() + pos * row, v + t0 * row, sizeof(float) * n * row);
    be.attention(s->att.data() + static_cast<int64_t>(t0) * H * hd, q + static_cast<int64_t>(t0) * H * hd,
                 lc.k.data(), lc.v.data(), n, pos, H, KV, hd, hd, c.attn_scale, c.window[l],
                 lw.sinks, s->scores.data(), nullptr);
  }
  be.linear(s->proj.data(), s->att.data(), lw.o, T, &s->lin);
}

void attention_mla(const Model& m, InferState* s, int l, const SeqSpan* seqs, int n_seqs, int T) {
  const Backend& be = backend();
  const ModelConfig& c = m.cfg;
  const LayerWeights& lw = m.layers[l];
  const int H = c.n_heads, nope = c.qk_nope_dim, R = c.qk_rope_dim;
  const int dv = c.v_head_dim, Lc = c.kv_lora_rank, dq = nope + R;
  const float kMlaNormEps = 1e-6f;  // q_a_layernorm / kv_a_layernorm are built with the default eps
  float* q = s->q.data();  // (T, H, dq)
  if (c.q_lora_rank > 0) {
    be.linear(s->qa.data(), s->xn.data(), lw.q_a, T, &s->lin);
    be.rmsnorm(s->qa.data(), s->qa.data(), lw.q_a_norm, T, c.q_lora_rank, kMlaNormEps);
    be.linear(q, s->qa.data(), lw.q_b, T, &s->lin);
  } else {
    be.linear(q, s->xn.data(), lw.q, T, &s->lin);
  }
  // Compressed latent and shared rope key go straight into the cache.
  float* ckv = s->ckv.data();  // (T, Lc + R)
  be.linear(ckv, s->xn.data(), lw.kv_a, T, &s->lin);
  for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n, ++i) {
    LayerCache& lc = seqs[i].cache[l];
    const int pos = seqs[i].pos, n = seqs[i].n;
    for (int t = 0; t < n; ++t) {
      const float* row = ckv + static_cast<int64_t>(t0 + t) * (Lc + R);
      be.rmsnorm(lc.k.data() + static_cast<int64_t>(pos + t) * Lc, row, lw.kv_a_norm, 1, Lc,
                 kMlaNormEps);
      std::memcpy(lc.v.data() + static_cast<int64_t>(pos + t) * R, row + Lc, sizeof(float) * R);
    }
    be.rope(lc.v.data() + static_cast<int64_t>(pos) * R, n, 1, R, R, R,
            s->rope_cos.data() + static_cast<int64_t>(t0) * (R / 2),
            s->rope_sin.data() + static_cast<int64_t>(t0) * (R / 2), c.rope.layout);
  }
  float* qpe = s->qpe.data();  // (T, H, R)
  for (int64_t th = 0; th < static_cast<int64_t>(T) * H; ++th)
    std::memcpy(qpe + th * R, q + th * dq + nope, sizeof(float) * R);
  be.rope(qpe, T, H, static_cast<int64_t>(H) * R, R, R, s->rope_cos.data(), s->rope_sin.data(),
          c.rope.layout);
  // Absorb W_uk into the queries: qlat[t,h] = q_nope[t,h] . W_uk[h], W_uk[h] = kv_b rows
  // h*(nope+dv) .. +nope, each of width Lc.
  const float* wkv = lw.kv_b.w;  // (H*(nope+dv), Lc)
  for (int h = 0; h < H; ++h) {
    be.gemm(false, T, Lc, nope, q + h * dq, H * dq, wkv + static_cast<int64_t>(h) * (nope + dv) * Lc,
            Lc, s->qlat.data() + static_cast<int64_t>(h) * Lc, H * Lc);
  }
  for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n, ++i) {
    const LayerCache& lc = seqs[i].cache[l];
    const int64_t off = static_cast<int64_t>(t0) * H;
    be.mla_attention(s->olat.data() + off * Lc, s->qlat.data() + off * Lc, qpe + off * R,
                     lc.k.data(), lc.v.data(), seqs[i].n, seqs[i].pos, H, Lc, R, c.attn_scale,
                     s->scores.data());
  }
  // Expand with W_uv: att[t,h] = olat[t,h] . W_uv[h]^T, W_uv[h] = the dv rows after W_uk[h].
  for (int h = 0; h < H; ++h) {
    be.gemm(true, T, dv, Lc, s->olat.data() + static_cast<int64_t>(h) * Lc, H * Lc,
            wkv + (static_cast<int64_t>(h) * (nope + dv) + nope) * Lc, Lc,
            s->att.data() + static_cast<int64_t>(h) * dv, H * dv);
  }
  be.linear(s->proj.data(), s->att.data(), lw.o, T, &s->lin);
}

void perturb_embeddings(InferState* s, int t0, int T, int pos, int D) {
  for (int t = 0; t < T; ++t) {
    float* h = s->h.data() + static_cast<int64_t>(t0 + t) * D;
    double ss = 0.0;
    for (int i = 0; i < D; ++i) ss += static_cast<double>(h[i]) * h[i];
    const float scale = s->embed_noise * static_cast<float>(std::sqrt(ss / D));
    const uint64_t base = static_cast<uint64_t>(pos + t) * static_cast<uint64_t>(D);
    for (int i = 0; i < D; ++i)
      h[i] += scale * static_cast<float>(rng_normal(s->noise_seed, base + i));
  }
}

// The routed FFN of layer l over the T rows of the call. Token-choice routers see each token on
// its own, so one call serves every sequence; the random router keys its draws on positions and
// expert choice picks among the tokens of a call, so for them each sequence runs alone.
void ffn_moe(const Model& m, InferState* s, int l, const SeqSpan* seqs, int n_seqs, int T) {
  const ModelConfig& c = m.cfg;
  const LayerWeights& lw = m.layers[l];
  const bool per_seq = n_seqs > 1 && (c.router.kind == ROUTER_RANDOM ||
                                      c.router.kind == ROUTER_EXPERT_CHOICE);
  s->ffn.xcache = m.expert_cache.get();
  s->ffn.xcache_layer = l;
  if (!per_seq) {
    moe_forward(s->proj.data(), c, lw, s->xn.data(), T, &s->ffn, s->ids.data(), seqs[0].pos,
                router_layer_seed(0, l));
    if (s->capture) {
      const int64_t TK = static_cast<int64_t>(T) * c.top_k;
      s->capture->idx[l].assign(s->ffn.idx.begin(), s->ffn.idx.begin() + TK);
      s->capture->w[l].assign(s->ffn.w.begin(), s->ffn.w.begin() + TK);
    }
    return;
  }
  if (s->capture) {
    s->capture->idx[l].clear();
    s->capture->w[l].clear();
  }
  const int64_t D = c.hidden;
  for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n, ++i) {
    moe_forward(s->proj.data() + t0 * D, c, lw, s->xn.data() + t0 * D, seqs[i].n, &s->ffn,
                s->ids.data() + t0, seqs[i].pos, router_layer_seed(0, l));
    if (s->capture) {
      const int64_t nK = static_cast<int64_t>(seqs[i].n) * c.top_k;
      s->capture->idx[l].insert(s->capture->idx[l].end(), s->ffn.idx.begin(), s->ffn.idx.begin() + nK);
      s->capture->w[l].insert(s->capture->w[l].end(), s->ffn.w.begin(), s->ffn.w.begin() + nK);
    }
  }
}

// One block (layer l, a main layer or an MTP module's) over the T rows of s->h, in place.
void layer_forward(const Model& m, InferState* s, int l, const SeqSpan* seqs, int n_seqs, int T) {
  const Backend& be = backend();
  const ModelConfig& c = m.cfg;
  const LayerWeights& lw = m.layers[l];
  const int D = c.hidden;
  const int64_t TD = static_cast<int64_t>(T) * D;
  be.rmsnorm(s->xn.data(), s->h.data(), lw.attn_norm, T, D, c.rms_eps);
  if (c.mla) attention_mla(m, s, l, seqs, n_seqs, T);
  else attention_gqa(m, s, l, seqs, n_seqs, T);
  be.add(s->h.data(), s->proj.data(), TD);
  // The expert cache's prefetch: layer l+1's experts predicted from the stream as it is now.
  if (m.expert_cache && l + 1 < c.n_layers && c.is_moe[l + 1] &&
      (n_seqs == 1 || c.router.kind != ROUTER_RANDOM))
    expert_cache_predict(m.expert_cache.get(), m, l + 1, s->h.data(), T, s->ids.data(),
                         seqs[0].pos);
  be.rmsnorm(s->xn.data(), s->h.data(), lw.ffn_norm, T, D, c.rms_eps);
  if (c.is_moe[l]) {
    ffn_moe(m, s, l, seqs, n_seqs, T);
  } else {
    mlp_forward(s->proj.data(), lw.mlp, s->xn.data(), T, s->ffn.hg.data(), s->ffn.hu.data(),
                &s->ffn.lin);
  }
  be.add(s->h.data(), s->proj.data(), TD);
}

// Embeds the tokens of every sequence into s->h and fills the per-row rope tables. Returns T.
int embed_rows(const Model& m, InferState* s, const SeqSpan* seqs, int n_seqs) {
  const Backend& be = backend();
  const ModelConfig& c = m.cfg;
  const int D = c.hidden, V = c.vocab, R2 = c.rope.dim / 2;
  int T = 0;
  for (int i = 0; i < n_seqs; ++i) {
    const SeqSpan& q = seqs[i];
    if (q.n <= 0) fail("no input tokens");
    if (T + q.n > s->T_max) fail("%d tokens exceed the %d this state was sized for", T + q.n, s->T_max);
    if (q.ctx > s->ctx) fail("a sequence's context of %d exceeds the state's %d", q.ctx, s->ctx);
    if (q.pos + q.n > q.ctx)
      fail("context full: %d cached + %d new tokens exceed the context of %d", q.pos, q.n, q.ctx);
    for (int t = 0; t < q.n; ++t) {
      const int32_t id = q.ids[t];
      if (id < 0 || id >= V) fail("token id %d is outside the vocabulary [0, %d)", id, V);
      std::memcpy(s->h.data() + static_cast<int64_t>(T + t) * D, m.embed + static_cast<int64_t>(id) * D,
                  sizeof(float) * D);
      s->ids[T + t] = id;
    }
    if (s->embed_noise > 0.0f) perturb_embeddings(s, T, q.n, q.pos, D);
    be.rope_table(s->rope_cos.data() + static_cast<int64_t>(T) * R2,
                  s->rope_sin.data() + static_cast<int64_t>(T) * R2, c.rope, q.pos, q.n);
    T += q.n;
  }
  return T;
}

// The forward of every sequence's new tokens in one pass; the caller advances the positions.
void forward_seqs(const Model& m, InferState* s, const SeqSpan* seqs, int n_seqs, bool all_logits) {
  const Backend& be = backend();
  const ModelConfig& c = m.cfg;
  if (n_seqs <= 0) fail("no input tokens");
  const int T = embed_rows(m, s, seqs, n_seqs);
  if (m.expert_cache) expert_cache_begin_forward(m.expert_cache.get(), T);
  const int D = c.hidden, V = c.vocab;
  if (s->capture) {
    s->capture->idx.resize(c.n_layers + c.mtp_layers);  // the MTP modules' blocks last
    s->capture->w.resize(c.n_layers + c.mtp_layers);
  }
  for (int l = 0; l < c.n_layers; ++l) layer_forward(m, s, l, seqs, n_seqs, T);
  // The rows whose logits are wanted: all of them, or the last of each sequence.
  int n = T;
  const float* hrow = s->h.data();
  if (!all_logits) {
    n = n_seqs;
    for (int i = 0, t_end = 0; i < n_seqs; ++i) {
      t_end += seqs[i].n;
      std::memcpy(s->proj.data() + static_cast<int64_t>(i) * D,
                  s->h.data() + static_cast<int64_t>(t_end - 1) * D, sizeof(float) * D);
    }
    hrow = s->proj.data();
  }
  be.rmsnorm(s->xn.data(), hrow, m.final_norm, n, D, c.rms_eps);
  Linear head;
  head.w = m.lm_head;
  head.q = m.lm_head_q;
  head.out = V;
  head.in = D;
  be.linear(s->logits.data(), s->xn.data(), head, n, &s->lin);
}

}  // namespace

void infer_forward(const Model& m, InferState* s, const int32_t* ids, int T, bool all_logits) {
  if (T <= 0) fail("no input tokens");
  SeqSpan one;
  one.cache = s->cache.data();
  one.pos = s->pos;
  one.ctx = s->ctx;
  one.ids = ids;
  one.n = T;
  forward_seqs(m, s, &one, 1, all_logits);
  s->pos += T;
}

void infer_forward_batch(const Model& m, InferState* s, const SeqSpan* seqs, int n_seqs) {
  forward_seqs(m, s, seqs, n_seqs, false);
}

void infer_mtp_forward(const Model& m, InferState* s, int k, const float* h_prev,
                       const int32_t* ids, int pos, int n, float* h_out) {
  const Backend& be = backend();
  const ModelConfig& c = m.cfg;
  MOE_CHECK(k >= 0 && k < c.mtp_layers);
  const MtpWeights& mw = m.mtp[k];
  const int D = c.hidden, V = c.vocab;
  if (n <= 0 || n > s->T_max) fail("%d MTP positions: the state holds 1 to %d", n, s->T_max);
  if (pos + n > s->ctx) fail("context full: %d + %d MTP positions exceed %d", pos, n, s->ctx);
  float* cat = s->mtp_cat.data();  // (n, 2D) [enorm(embed(ids)); hnorm(h_prev)]
  for (int t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= V) fail("token id %d is outside the vocabulary [0, %d)", ids[t], V);
    be.rmsnorm(cat + static_cast<int64_t>(t) * 2 * D, mw.embed + static_cast<int64_t>(ids[t]) * D,
               mw.enorm, 1, D, c.rms_eps);
    be.rmsnorm(cat + static_cast<int64_t>(t) * 2 * D + D, h_prev + static_cast<int64_t>(t) * D,
               mw.hnorm, 1, D, c.rms_eps);
    s->ids[t] = ids[t];
  }
  be.linear(s->h.data(), cat, mw.eh_proj, n, &s->lin);
  be.rope_table(s->rope_cos.data(), s->rope_sin.data(), c.rope, pos, n);
  SeqSpan one;
  one.cache = s->cache.data();
  one.pos = pos;
  one.ctx = s->ctx;
  one.ids = ids;
  one.n = n;
  if (s->capture) {  // captured as layer L + k
    s->capture->idx.resize(c.n_layers + c.mtp_layers);
    s->capture->w.resize(c.n_layers + c.mtp_layers);
  }
  layer_forward(m, s, c.n_layers + k, &one, 1, n);
  std::memcpy(h_out, s->h.data(), sizeof(float) * static_cast<size_t>(n) * D);
  const float* last = s->h.data() + static_cast<int64_t>(n - 1) * D;
  be.rmsnorm(s->xn.data(), last, mw.head_norm, 1, D, c.rms_eps);
  Linear head;
  head.w = mw.head;
  head.q = mw.head_q;
  head.out = V;
  head.in = D;
  be.linear(s->logits.data(), s->xn.data(), head, 1, &s->lin);
}

}  // namespace moe
