#include "moe/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "ops/ops.h"
#include "quant/quant.h"

namespace moe {

namespace {

// Indices of the k largest values of a[0..n), largest first; ties go to the lower index.
void topk(const float* a, int n, int k, int32_t* out) {
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      bool taken = false;
      for (int q = 0; q < j; ++q) taken |= out[q] == i;
      if (taken) continue;
      if (best < 0 || a[i] > a[best] || (std::isnan(a[best]) && !std::isnan(a[i]))) best = i;
    }
    out[j] = best;
  }
}

}  // namespace

void moe_route(const RouterSpec& r, const float* logits, const float* e_bias, int T, int E, int K,
               int32_t* idx, float* w, float* work) {
  const float kNegInf = -std::numeric_limits<float>::infinity();
  float* score = work;              // (E)
  float* sel = work + E;            // (E)
  float* gscore = work + 2 * E;     // (n_group)
  int32_t gidx[kMaxGroups];
  MOE_CHECK(r.n_group <= kMaxGroups);
  for (int t = 0; t < T; ++t) {
    const float* lg = logits + static_cast<int64_t>(t) * E;
    int32_t* it = idx + static_cast<int64_t>(t) * K;
    float* wt = w + static_cast<int64_t>(t) * K;
    if (r.topk_then_softmax) {
      topk(lg, E, K, it);
      for (int k = 0; k < K; ++k) wt[k] = lg[it[k]];
      op_softmax(wt, K);
      continue;
    }
    if (r.score == SCORE_SOFTMAX) {
      std::copy(lg, lg + E, score);
      op_softmax(score, E);
    } else {
      for (int e = 0; e < E; ++e) score[e] = op_sigmoid(lg[e]);
    }
    for (int e = 0; e < E; ++e) sel[e] = score[e] + (e_bias ? e_bias[e] : 0.0f);
    if (r.group != GROUP_NONE) {
      const int gs = E / r.n_group;
      for (int g = 0; g < r.n_group; ++g) {
        const float* v = sel + g * gs;
        if (r.group == GROUP_MAX) {
          gscore[g] = *std::max_element(v, v + gs);
        } else {  // GROUP_TOP2_SUM
          int32_t two[2];
          topk(v, gs, 2, two);
          gscore[g] = v[two[0]] + v[two[1]];
        }
      }
      topk(gscore, r.n_group, r.topk_group, gidx);
      for (int g = 0; g < r.n_group; ++g) {
        bool keep = false;
        for (int q = 0; q < r.topk_group; ++q) keep |= gidx[q] == g;
        if (!keep) std::fill(sel + g * gs, sel + (g + 1) * gs, kNegInf);
      }
    }
    topk(sel, E, K, it);
    float sum = 0.0f;
    for (int k = 0; k < K; ++k) {
      wt[k] = score[it[k]];
      sum += wt[k];
    }
    if (r.norm_topk) {
      const float inv = 1.0f / (sum + r.norm_eps);
      for (int k = 0; k < K; ++k) wt[k] *= inv;
    }
    for (int k = 0; k < K; ++k) wt[k] *= r.scale;
  }
}

void ffn_scratch_init(FfnScratch* s, const ModelConfig& c, int T_max) {
  const int64_t D = c.hidden, E = std::max(c.n_experts, 1), K = std::max(c.top_k, 1);
  const int64_t F = std::max({c.dense_ffn, c.expert_ffn, c.shared_ffn, 1});
  const RouterKind kind = c.router.kind;
  const bool expert_choice = kind == ROUTER_EXPERT_CHOICE && c.n_experts > 0;
  const int64_t A = expert_choice ? std::max(T_max * K, E) : T_max * K;  // A_max
  s->T_max = T_max;
  s->logits.assign(T_max * E, 0.0f);
  s->idx.assign(T_max * K, 0);
  s->w.assign(T_max * K, 0.0f);
  s->counts.assign(E + 1, 0);
  s->cursor.assign(E, 0);
  s->route_work.assign(2 * E + kMaxGroups, 0.0f);
  s->order.assign(A, 0);
  s->slot.assign(A, 0);
  s->xs.assign(A * D, 0.0f);
  s->g.assign(A * F, 0.0f);
  s->u.assign(A * F, 0.0f);
  s->ys.assign(A * D, 0.0f);
  s->tmp.assign(T_max * D, 0.0f);
  s->gate1.assign(T_max, 0.0f);
  const int64_t Fe = std::max(c.expert_ffn, 1), W = std::max(D, Fe);
  const auto q8_bytes = [](int64_t n) { return (n + kQBlock - 1) / kQBlock * kQ8xBytes; };
  s->deq_rows = static_cast<int>(std::min<int64_t>(W, std::max<int64_t>(32, (1 << 20) / W)));
  s->xq.assign(A * q8_bytes(D), 0);
  s->hq.assign(A * q8_bytes(Fe), 0);
  s->wdeq.assign(s->deq_rows * W, 0.0f);
  s->dot_experts.assign(E, 0);
  linear_scratch_init(&s->lin, std::max({D, static_cast<int64_t>(c.dense_ffn),
                                         static_cast<int64_t>(c.shared_ffn)}));
  s->use_router = kind != ROUTER_TOKEN_CHOICE && c.n_experts > 0 && c.top_k > 0;
  if (s->use_router) routing_init(&s->routing, T_max, c.n_experts, c.top_k);
  else s->routing = Routing();
  s->tok_off.assign(expert_choice ? T_max + 1 : 0, 0);
  s->tok_asg.assign(expert_choice ? A : 0, 0);
}

void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u,
                 LinearScratch* ls) {
  const int F = w.gate.out;
  linear_forward(g, x, w.gate, T, ls);
  linear_forward(u, x, w.up, T, ls);
  const int64_t n = static_cast<int64_t>(T) * F;
  for (int64_t i = 0; i < n; ++i) g[i] = op_silu(g[i]) * u[i];
  linear_forward(out, g, w.down, T, ls);
}

namespace {

// h (n, F) = act(g, u) in place into g.
void expert_act(const ModelConfig& c, float* g, const float* u, int64_t n) {
  if (c.act == ACT_SWIGLU) {
    for (int64_t i = 0; i < n; ++i) g[i] = op_silu(g[i]) * u[i];
    return;
  }
  const float lim = c.act_limit, alpha = c.act_alpha;
  for (int64_t i = 0; i < n; ++i) {
    float gv = std::min(g[i], lim);
    float uv = std::min(lim, std::max(-lim, u[i]));
    g[i] = (uv + 1.0f) * (gv * op_sigmoid(alpha * gv));
  }
}

bool is_raw(const ExpertWeights& ew) { return !ew.gate || !ew.up || !ew.down; }

// y (n, N) = x (n, K) W^T + b for one expert matrix of any storage.
void expert_matmul(float* y, const float* x, const float* w, const QWeight& q, const float* b,
                   int n, int N, int K, FfnScratch* s) {
  if (w) op_linear(y, x, w, b, n, N, K);
  else raw_gemm(y, x, q, b, n, N, K, s->wdeq.data(), s->deq_rows);
}

// The experts listed in s->dot_experts (short segments with raw matrices), row by row through
// the dot kernels, in one parallel region: quantize inputs, gate/up rows, activation (and
// quantization of its output), down rows. Each stage splits (expert, block of output rows); a
// work item takes its expert's tokens kTok at a time, each weight row against all of them.
void experts_dot(const ModelConfig& c, const LayerWeights& lw, FfnScratch* s, int n_dot) {
  const int D = c.hidden, F = c.expert_ffn;
  constexpr int kRows = 16;  // output rows per work item
  constexpr int kTok = 4;    // tokens per multi-activation dot (quant.h dot4_*)
  const int64_t xrb = (D + kQBlock - 1) / kQBlock * kQ8xBytes;  // Q8X bytes of an input row
  const int64_t hrb = (F + kQBlock - 1) / kQBlock * kQ8xBytes;  // Q8X bytes of an activation row
  const int64_t nbF = (F + kRows - 1) / kRows, nbD = (D + kRows - 1) / kRows;
  const QKernels& k = qkernels();
  const int32_t* off = s->counts.data();
  const int32_t* dot = s->dot_experts.data();
  const float* xs = s->xs.data();  // (TK, D)
  uint8_t* xq = s->xq.data();      // (TK, xrb)
  uint8_t* hq = s->hq.data();      // (TK, hrb)
  float* g = s->g.data();          // (TK, F)
  float* u = s->u.data();          // (TK, F)
  float* ys = s->ys.data();        // (TK, D)
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int i = 0; i < n_dot; ++i) {
      const ExpertWeights& ew = lw.experts[dot[i]];
      if (!qtype_is_block(ew.gate_q.type) && !qtype_is_block(ew.up_q.type)) continue;
      for (int p = off[dot[i]]; p < off[dot[i] + 1]; ++p)
        k.quantize_q8x(xs + static_cast<int64_t>(p) * D, xq + p * xrb, D);
    }
#pragma omp for schedule(static)
    for (int64_t w = 0; w < n_dot * nbF; ++w) {
      const int e = dot[w / nbF];
      const ExpertWeights& ew = lw.experts[e];
      const int r0 = static_cast<int>(w % nbF) * kRows, r1 = std::min(F, r0 + kRows);
      for (int p = off[e]; p < off[e + 1]; p += kTok) {
        const int na = std::min(kTok, off[e + 1] - p);
        const float* x = xs + static_cast<int64_t>(p) * D;
        // Gate and up rows alternate (two weight streams in flight), as in the row-by-row loop.
        for (int r = r0; r < r1; ++r) {
          linear_rows_dot(k, ew.gate, ew.gate_q, ew.gate_b, r, r + 1, x, xq + p * xrb, xrb, na, D,
                   g + static_cast<int64_t>(p) * F, F);
          linear_rows_dot(k, ew.up, ew.up_q, ew.up_b, r, r + 1, x, xq + p * xrb, xrb, na, D,
                   u + static_cast<int64_t>(p) * F, F);
        }
      }
    }
#pragma omp for schedule(static)
    for (int i = 0; i < n_dot; ++i) {
      const ExpertWeights& ew = lw.experts[dot[i]];
      for (int p = off[dot[i]]; p < off[dot[i] + 1]; ++p) {
        float* gp = g + static_cast<int64_t>(p) * F;
        expert_act(c, gp, u + static_cast<int64_t>(p) * F, F);
        if (qtype_is_block(ew.down_q.type)) k.quantize_q8x(gp, hq + p * hrb, F);
      }
    }
#pragma omp for schedule(static)
    for (int64_t w = 0; w < n_dot * nbD; ++w) {
      const int e = dot[w / nbD];
      const ExpertWeights& ew = lw.experts[e];
      const int r0 = static_cast<int>(w % nbD) * kRows, r1 = std::min(D, r0 + kRows);
      for (int p = off[e]; p < off[e + 1]; p += kTok) {
        const int na = std::min(kTok, off[e + 1] - p);
        linear_rows_dot(k, ew.down, ew.down_q, ew.down_b, r0, r1, g + static_cast<int64_t>(p) * F,
                 hq + p * hrb, hrb, na, F, ys + static_cast<int64_t>(p) * D, D);
      }
    }
  }
}

// The assignments of one call: A (token, expert, weight) triples. tok == null: a fixed K per
// token, assignment a = t*K + k belongs to token a / K (s->idx, s->w layout).
struct Assignments {
  int64_t A = 0;
  const int32_t* tok = nullptr;
  const int32_t* expert = nullptr;
  const float* w = nullptr;
};

// Expert choice's (T, K) summary in s->idx / s->w: each token's K highest-weight experts (ties:
// the lower expert, which comes first in assignment order), padded with -1 / 0.
void summarize_expert_choice(const Routing& r, int T, int K, FfnScratch* s) {
  for (int t = 0; t < T; ++t) {
    int32_t* it = s->idx.data() + static_cast<int64_t>(t) * K;
    float* wt = s->w.data() + static_cast<int64_t>(t) * K;
    std::fill(it, it + K, -1);
    std::fill(wt, wt + K, 0.0f);
    int n = 0;
    for (int j = s->tok_off[t]; j < s->tok_off[t + 1]; ++j) {
      const int32_t a = s->tok_asg[j];
      int q = n < K ? n++ : K;
      while (q > 0 && wt[q - 1] < r.w[a]) {
        if (q < K) {
          it[q] = it[q - 1];
          wt[q] = wt[q - 1];
        }
        --q;
      }
      if (q < K) {
        it[q] = r.expert[a];
        wt[q] = r.w[a];
      }
    }
  }
}

// Routes with router_forward (train = false, dropless) for the routers other than token choice.
Assignments route_with_router(const ModelConfig& c, const LayerWeights& lw, const float* x, int T,
                              FfnScratch* s, const int32_t* ids, int pos, uint64_t seed) {
  const RouterSpec& spec = c.router;
  const int D = c.hidden, E = c.n_experts, K = c.top_k;
  MOE_CHECK(s->use_router);
  if (spec.kind == ROUTER_HASH && !ids)
    fail("hash routing needs the token ids: moe_forward was called without them");
  const bool learned = spec.kind != ROUTER_HASH && spec.kind != ROUTER_RANDOM;
  if (learned) op_linear(s->logits.data(), x, lw.router.w, lw.router.b, T, E, D);
  Routing& r = s->routing;
  router_forward(&r, spec, learned ? s->logits.data() : nullptr, lw.e_bias, nullptr, ids, T, 0.0f,
                 seed, false, pos);
  Assignments as;
  as.A = r.A;
  if (spec.kind != ROUTER_EXPERT_CHOICE) {  // fixed K: assignment t*K+k, as token choice's
    MOE_CHECK(r.A == T * K);
    std::copy(r.expert.begin(), r.expert.begin() + r.A, s->idx.begin());
    std::copy(r.w.begin(), r.w.begin() + r.A, s->w.begin());
    as.expert = s->idx.data();
    as.w = s->w.data();
    return as;
  }
  // Each token's assignments, in assignment order.
  int32_t* off = s->tok_off.data();
  std::fill(off, off + T + 1, 0);
  for (int a = 0; a < r.A; ++a) ++off[r.tok[a] + 1];
  for (int t = 0; t < T; ++t) off[t + 1] += off[t];
  for (int a = 0; a < r.A; ++a) s->tok_asg[off[r.tok[a]]++] = a;  // off[t] ends at off[t + 1]
  for (int t = T; t > 0; --t) off[t] = off[t - 1];
  off[0] = 0;
  summarize_expert_choice(r, T, K, s);
  as.tok = r.tok.data();
  as.expert = r.expert.data();
  as.w = r.w.data();
  return as;
}

}  // namespace

void moe_forward(float* out, const ModelConfig& c, const LayerWeights& lw, const float* x, int T,
                 FfnScratch* s, const int32_t* ids, int pos, uint64_t seed) {
  MOE_CHECK(T <= s->T_max);
  const int D = c.hidden, E = c.n_experts, K = c.top_k, F = c.expert_ffn;

  // 1. Route.
  Assignments as;
  if (c.router.kind == ROUTER_TOKEN_CHOICE) {
    op_linear(s->logits.data(), x, lw.router.w, lw.router.b, T, E, D);
    moe_route(c.router, s->logits.data(), lw.e_bias, T, E, K, s->idx.data(), s->w.data(),
              s->route_work.data());
    as.A = static_cast<int64_t>(T) * K;
    as.expert = s->idx.data();
    as.w = s->w.data();
  } else {
    as = route_with_router(c, lw, x, T, s, ids, pos, seed);
  }
  const int64_t A = as.A;

  // 2. Count per expert, prefix-sum, and place each assignment in its expert's segment.
  int32_t* off = s->counts.data();
  std::fill(off, off + E + 1, 0);
  for (int64_t a = 0; a < A; ++a) ++off[as.expert[a] + 1];
  for (int e = 0; e < E; ++e) off[e + 1] += off[e];
  // Stable placement: the assignments of one expert keep assignment order.
  int32_t* fill = s->cursor.data();
  std::copy(off, off + E, fill);
  for (int64_t a = 0; a < A; ++a) {
    int32_t p = fill[as.expert[a]]++;
    s->order[p] = static_cast<int32_t>(a);
    s->slot[a] = p;
  }

  // 3. Gather inputs into expert order.
  for (int64_t p = 0; p < A; ++p) {
    const int64_t a = s->order[p];
    const float* src = x + (as.tok ? as.tok[a] : a / K) * static_cast<int64_t>(D);
    std::memcpy(s->xs.data() + p * D, src, sizeof(float) * D);
  }

  // 4. Run each expert on its segment only: short segments of raw experts through the dot
  // kernels, all together; the others one by one (fp32 BLAS, or dequantized blocks and sgemm).
  const auto use_dot = [&](int e) {
    const int n = off[e + 1] - off[e];
    const ExpertWeights& ew = lw.experts[e];
    const QType t = ew.gate ? ew.down_q.type : ew.gate_q.type;  // the raw matrices' type
    return n > 0 && is_raw(ew) && n <= ffn_dot_max_tokens(*s, t);
  };
  int n_dot = 0;
  for (int e = 0; e < E; ++e)
    if (use_dot(e)) s->dot_experts[n_dot++] = e;
  if (n_dot > 0) experts_dot(c, lw, s, n_dot);
  for (int e = 0; e < E; ++e) {
    const int n = off[e + 1] - off[e];
    if (n == 0 || use_dot(e)) continue;
    const ExpertWeights& ew = lw.experts[e];
    const float* xe = s->xs.data() + static_cast<int64_t>(off[e]) * D;
    float* g = s->g.data() + static_cast<int64_t>(off[e]) * F;
    float* u = s->u.data() + static_cast<int64_t>(off[e]) * F;
    expert_matmul(g, xe, ew.gate, ew.gate_q, ew.gate_b, n, F, D, s);
    expert_matmul(u, xe, ew.up, ew.up_q, ew.up_b, n, F, D, s);
    expert_act(c, g, u, static_cast<int64_t>(n) * F);
    expert_matmul(s->ys.data() + static_cast<int64_t>(off[e]) * D, g, ew.down, ew.down_q,
                  ew.down_b, n, D, F, s);
  }

  // 5. Combine: out[t] = sum of w[a] * y[a] over the token's assignments, in assignment order
  // (k order for a fixed K).
  for (int t = 0; t < T; ++t) {
    float* o = out + static_cast<int64_t>(t) * D;
    std::fill(o, o + D, 0.0f);
    const int64_t j0 = as.tok ? s->tok_off[t] : static_cast<int64_t>(t) * K;
    const int64_t j1 = as.tok ? s->tok_off[t + 1] : static_cast<int64_t>(t + 1) * K;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t a = as.tok ? s->tok_asg[j] : j;
      const float wk = as.w[a];
      const float* y = s->ys.data() + static_cast<int64_t>(s->slot[a]) * D;
      for (int i = 0; i < D; ++i) o[i] += wk * y[i];
    }
  }

  // 6. Shared expert(s).
  if (c.shared_ffn > 0) {
    float* sh = s->tmp.data();
    mlp_forward(sh, lw.shared, x, T, s->g.data(), s->u.data(), &s->lin);
    if (c.shared_gate) op_linear(s->gate1.data(), x, lw.shared_gate.w, nullptr, T, 1, D);
    for (int t = 0; t < T; ++t) {
      const float gt = c.shared_gate ? op_sigmoid(s->gate1[t]) : 1.0f;
      float* o = out + static_cast<int64_t>(t) * D;
      const float* shr = sh + static_cast<int64_t>(t) * D;
      for (int i = 0; i < D; ++i) o[i] += gt * shr[i];
    }
  }
}

}  // namespace moe
