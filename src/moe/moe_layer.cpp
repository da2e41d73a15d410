#include "moe/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "ops/ops.h"

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
  s->T_max = T_max;
  s->logits.assign(T_max * E, 0.0f);
  s->idx.assign(T_max * K, 0);
  s->w.assign(T_max * K, 0.0f);
  s->counts.assign(E + 1, 0);
  s->cursor.assign(E, 0);
  s->route_work.assign(2 * E + kMaxGroups, 0.0f);
  s->order.assign(T_max * K, 0);
  s->slot.assign(T_max * K, 0);
  s->xs.assign(T_max * K * D, 0.0f);
  s->g.assign(T_max * K * F, 0.0f);
  s->u.assign(T_max * K * F, 0.0f);
  s->ys.assign(T_max * K * D, 0.0f);
  s->tmp.assign(T_max * D, 0.0f);
  s->gate1.assign(T_max, 0.0f);
}

void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u) {
  const int F = w.gate.out, D = w.gate.in;
  op_linear(g, x, w.gate.w, w.gate.b, T, F, D);
  op_linear(u, x, w.up.w, w.up.b, T, F, D);
  const int64_t n = static_cast<int64_t>(T) * F;
  for (int64_t i = 0; i < n; ++i) g[i] = op_silu(g[i]) * u[i];
  op_linear(out, g, w.down.w, w.down.b, T, w.down.out, F);
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

}  // namespace

void moe_forward(float* out, const ModelConfig& c, const LayerWeights& lw, const float* x, int T,
                 FfnScratch* s) {
  MOE_CHECK(T <= s->T_max);
  const int D = c.hidden, E = c.n_experts, K = c.top_k, F = c.expert_ffn;
  const int64_t TK = static_cast<int64_t>(T) * K;

  // 1. Route.
  op_linear(s->logits.data(), x, lw.router.w, lw.router.b, T, E, D);
  moe_route(c.router, s->logits.data(), lw.e_bias, T, E, K, s->idx.data(), s->w.data(),
            s->route_work.data());

  // 2. Count per expert, prefix-sum, and place each assignment in its expert's segment.
  int32_t* off = s->counts.data();
  std::fill(off, off + E + 1, 0);
  for (int64_t a = 0; a < TK; ++a) ++off[s->idx[a] + 1];
  for (int e = 0; e < E; ++e) off[e + 1] += off[e];
  // Stable placement: the assignments of one expert keep token order.
  int32_t* fill = s->cursor.data();
  std::copy(off, off + E, fill);
  for (int64_t a = 0; a < TK; ++a) {
    int32_t p = fill[s->idx[a]]++;
    s->order[p] = static_cast<int32_t>(a);
    s->slot[a] = p;
  }

  // 3. Gather inputs into expert order.
  for (int64_t p = 0; p < TK; ++p) {
    const float* src = x + static_cast<int64_t>(s->order[p] / K) * D;
    std::memcpy(s->xs.data() + p * D, src, sizeof(float) * D);
  }

  // 4. Run each expert on its segment only.
  for (int e = 0; e < E; ++e) {
    const int n = off[e + 1] - off[e];
    if (n == 0) continue;
    const ExpertWeights& ew = lw.experts[e];
    const float* xe = s->xs.data() + static_cast<int64_t>(off[e]) * D;
    float* g = s->g.data() + static_cast<int64_t>(off[e]) * F;
    float* u = s->u.data() + static_cast<int64_t>(off[e]) * F;
    op_linear(g, xe, ew.gate, ew.gate_b, n, F, D);
    op_linear(u, xe, ew.up, ew.up_b, n, F, D);
    expert_act(c, g, u, static_cast<int64_t>(n) * F);
    op_linear(s->ys.data() + static_cast<int64_t>(off[e]) * D, g, ew.down, ew.down_b, n, D, F);
  }

  // 5. Combine: out[t] = sum_k w[t,k] * y[t,k].
  for (int t = 0; t < T; ++t) {
    float* o = out + static_cast<int64_t>(t) * D;
    std::fill(o, o + D, 0.0f);
    for (int k = 0; k < K; ++k) {
      const int64_t a = static_cast<int64_t>(t) * K + k;
      const float wk = s->w[a];
      const float* y = s->ys.data() + static_cast<int64_t>(s->slot[a]) * D;
      for (int i = 0; i < D; ++i) o[i] += wk * y[i];
    }
  }

  // 6. Shared expert(s).
  if (c.shared_ffn > 0) {
    float* sh = s->tmp.data();
    mlp_forward(sh, lw.shared, x, T, s->g.data(), s->u.data());
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
