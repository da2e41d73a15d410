#include "ops/router.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "ops/capacity.h"
#include "ops/ops.h"

namespace moe {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Indices of the k largest of a[0..n), largest first; ties go to the lower index; NaN ranks last.
void topk_indices(const float* a, int n, int k, int32_t* out) {
  auto val = [&](int i) { return std::isnan(a[i]) ? kNegInf : a[i]; };
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const float v = val(i);
    int j;
    if (m < k) j = m++;
    else if (v > val(out[k - 1]) || (std::isnan(a[out[k - 1]]) && !std::isnan(a[i]))) j = k - 1;
    else continue;
    while (j > 0 && val(out[j - 1]) < v) {
      out[j] = out[j - 1];
      --j;
    }
    out[j] = i;
  }
}

// Whether a router's scores are sigmoids (probs: the sigmoids normalised per token) rather than a
// softmax (probs = scores).
bool sigmoid_scores(const RouterSpec& spec, int K) {
  switch (spec.kind) {
    case ROUTER_TOKEN_CHOICE: return spec.score == SCORE_SIGMOID && !spec.topk_then_softmax;
    case ROUTER_BASE: return true;
    case ROUTER_SINKHORN: return K == 1;  // Megatron: sigmoid for top-1, softmax for top-k
    default: return false;
  }
}

void score_row(bool sigmoid, const float* lg, int E, float* score, float* probs) {
  if (!sigmoid) {
    std::copy(lg, lg + E, score);
    op_softmax(score, E);
    std::copy(score, score + E, probs);
    return;
  }
  float sum = 0.0f;
  for (int e = 0; e < E; ++e) sum += (score[e] = op_sigmoid(lg[e]));
  for (int e = 0; e < E; ++e) probs[e] = score[e] / sum;
}

// The weights of the K selected experts: scale * score, renormalised over them with norm_topk.
void selected_weights(const RouterSpec& spec, const float* score, const int32_t* idx, int K,
                      float* w) {
  float sum = 0.0f;
  for (int k = 0; k < K; ++k) sum += (w[k] = score[idx[k]]);
  const float inv = spec.norm_topk ? 1.0f / (sum + spec.norm_eps) : 1.0f;
  for (int k = 0; k < K; ++k) w[k] *= inv * spec.scale;
}

// Token-choice selection of one token: writes K experts and weights. Fills score/probs rows.
void route_token(const RouterSpec& spec, const float* lg, const float* e_bias, int E, int K,
                 float* score, float* probs, float* work, int32_t* idx, float* w) {
  float* sel = work;  // (E)
  float* gsc = work + E;  // (n_group)
  int32_t gidx[64];
  score_row(sigmoid_scores(spec, K), lg, E, score, probs);
  if (spec.topk_then_softmax) {
    topk_indices(lg, E, K, idx);
    for (int k = 0; k < K; ++k) w[k] = lg[idx[k]];
    op_softmax(w, K);
    for (int k = 0; k < K; ++k) w[k] *= spec.scale;
    return;
  }
  for (int e = 0; e < E; ++e) sel[e] = score[e] + (e_bias ? e_bias[e] : 0.0f);
  if (spec.group != GROUP_NONE) {
    const int gs = E / spec.n_group;
    for (int g = 0; g < spec.n_group; ++g) {
      const float* v = sel + g * gs;
      if (spec.group == GROUP_MAX) {
        gsc[g] = *std::max_element(v, v + gs);
      } else {
        int32_t two[2];
        topk_indices(v, gs, 2, two);
        gsc[g] = v[two[0]] + v[two[1]];
      }
    }
    topk_indices(gsc, spec.n_group, spec.topk_group, gidx);
    for (int g = 0; g < spec.n_group; ++g) {
      bool keep = false;
      for (int q = 0; q < spec.topk_group; ++q) keep |= gidx[q] == g;
      if (!keep) std::fill(sel + g * gs, sel + (g + 1) * gs, kNegInf);
    }
  }
  topk_indices(sel, E, K, idx);
  selected_weights(spec, score, idx, K, w);
}

// K experts drawn without replacement from p (E) for token key tok (router.h).
void sample_experts(const float* p, int E, int K, uint64_t seed, int64_t tok, int32_t* idx) {
  auto drawn = [&](int e, int k) {
    for (int q = 0; q < k; ++q)
      if (idx[q] == e) return true;
    return false;
  };
  for (int k = 0; k < K; ++k) {
    const double u =
        rng_uniform(seed ^ 0x2545f4914f6cdd1dULL, static_cast<uint64_t>(tok) * K + k);
    double rest = 0.0;
    for (int e = 0; e < E; ++e)
      if (!drawn(e, k)) rest += p[e];
    const double target = u * rest;
    double acc = 0.0;
    int pick = -1;
    for (int e = 0; e < E && pick < 0; ++e) {
      if (drawn(e, k)) continue;
      acc += p[e];
      if (acc > target) pick = e;
    }
    for (int e = E - 1; e >= 0 && pick < 0; --e)  // rounding: the last expert not drawn
      if (!drawn(e, k)) pick = e;
    idx[k] = pick;
  }
}

// One token of the BASE, Sinkhorn and REINFORCE routers (router.h). For BASE in training idx
// already holds the balanced assignment's expert; sel (E) is scratch.
void route_token_trained(const RouterSpec& spec, const float* lg, int E, int K, bool train,
                         const float* log_d1, uint64_t seed, int64_t tok, float* score,
                         float* probs, float* sel, int32_t* idx, float* w) {
  score_row(sigmoid_scores(spec, K), lg, E, score, probs);
  if (spec.kind == ROUTER_BASE) {
    if (!train) topk_indices(lg, E, 1, idx);
  } else if (spec.kind == ROUTER_SINKHORN && train) {
    for (int e = 0; e < E; ++e) sel[e] = lg[e] + log_d1[e];
    topk_indices(sel, E, K, idx);
  } else if (spec.kind == ROUTER_REINFORCE && train) {
    sample_experts(score, E, K, seed, tok, idx);
  } else {
    topk_indices(score, E, K, idx);
  }
  selected_weights(spec, score, idx, K, w);
}

// K distinct experts from a per-token stream of draws.
void distinct_draws(uint64_t key, int E, int K, int32_t* idx) {
  for (int k = 0, n = 0; k < K; ++n) {
    const int32_t e = static_cast<int32_t>(splitmix64(key + 0x632be59bd9b4e019ULL * n) % E);
    bool dup = false;
    for (int q = 0; q < k; ++q) dup |= idx[q] == e;
    if (!dup) idx[k++] = e;
  }
}

}  // namespace

void routing_init(Routing* r, int N_max, int E, int K, RouterKind kind) {
  MOE_CHECK(N_max > 0 && E > 0 && K > 0 && K <= E);
  r->E = E;
  r->K = K;
  const size_t A_max = std::max(static_cast<size_t>(N_max) * K, static_cast<size_t>(E));
  r->tok.assign(A_max, 0);
  r->expert.assign(A_max, 0);
  r->w.assign(A_max, 0.0f);
  r->kept.assign(A_max, 1);
  r->score.assign(static_cast<size_t>(N_max) * E, 0.0f);
  r->probs.assign(static_cast<size_t>(N_max) * E, 0.0f);
  r->noisy.assign(static_cast<size_t>(N_max) * E, 0.0f);
  r->noise.assign(static_cast<size_t>(N_max) * E, 0.0f);
  r->sel_count.assign(E, 0);
  r->kept_count.assign(E, 0);
  r->work.assign(static_cast<size_t>(4 * E + 64) + N_max, 0.0f);
  r->iwork.assign(A_max + 2 * E + 64 + N_max, 0);
  r->log_d1.assign(E, 0.0f);
  if (kind == ROUTER_BASE || kind == ROUTER_SINKHORN) assign_work_init(&r->assign, N_max, E);
  else r->assign = AssignWork();
  r->assign_work = 0;
}

void router_forward(Routing* r, const RouterSpec& spec, const float* logits, const float* e_bias,
                    const float* noise_logits, const int32_t* ids, int N, float capacity_factor,
                    uint64_t seed, bool train, int64_t t0) {
  const int E = r->E, K = r->K;
  MOE_CHECK(static_cast<size_t>(N) * K <= r->tok.size());
  MOE_CHECK(spec.kind != ROUTER_NOISY_TOPK || noise_logits || !train);
  MOE_CHECK(spec.kind != ROUTER_HASH || ids);
  MOE_CHECK(spec.kind != ROUTER_BASE || K == 1);
  r->N = N;
  r->assign_work = 0;
  r->dropped = 0;
  r->capacity = 0;
  if (spec.kind == ROUTER_EXPERT_CHOICE) {
    const double cf = std::max(1.0, static_cast<double>(capacity_factor));
    int C = static_cast<int>(std::ceil(static_cast<double>(N) * K / E * cf));
    C = std::max(1, std::min({C, N, static_cast<int>(static_cast<int64_t>(N) * K / E)}));
    MOE_CHECK(static_cast<size_t>(E) * C <= r->tok.size());
    r->capacity = C;
    for (int t = 0; t < N; ++t) {
      float* s = r->score.data() + static_cast<int64_t>(t) * E;
      std::copy(logits + static_cast<int64_t>(t) * E, logits + static_cast<int64_t>(t + 1) * E, s);
      op_softmax(s, E);
      std::copy(s, s + E, r->probs.data() + static_cast<int64_t>(t) * E);
    }
    float* col = r->work.data();  // (N)
    int32_t* top = r->iwork.data();
    r->A = E * C;
    for (int e = 0; e < E; ++e) {
      for (int t = 0; t < N; ++t) col[t] = r->score[static_cast<int64_t>(t) * E + e];
      topk_indices(col, N, C, top);
      for (int c = 0; c < C; ++c) {
        const int a = e * C + c;
        r->tok[a] = top[c];
        r->expert[a] = e;
        r->w[a] = col[top[c]] * spec.scale;
        r->kept[a] = 1;
      }
    }
  } else {
    r->A = N * K;
    const bool balanced = train && (spec.kind == ROUTER_BASE || spec.kind == ROUTER_SINKHORN);
    MOE_CHECK(!balanced || r->assign.price.size() >= static_cast<size_t>(N));
    if (balanced && spec.kind == ROUTER_BASE) {  // K = 1: expert[t] is token t's
      balanced_assignment(logits, N, E, r->expert.data(), &r->assign);
      r->assign_work = r->assign.bids;
    } else if (balanced) {
      r->assign_work = sinkhorn_scaling(logits, N, E, r->log_d1.data(), &r->assign);
    }
    for (int t = 0; t < N; ++t) {
      const float* lg = logits ? logits + static_cast<int64_t>(t) * E : nullptr;
      float* score = r->score.data() + static_cast<int64_t>(t) * E;
      float* probs = r->probs.data() + static_cast<int64_t>(t) * E;
      int32_t* idx = r->expert.data() + static_cast<int64_t>(t) * K;
      float* w = r->w.data() + static_cast<int64_t>(t) * K;
      for (int k = 0; k < K; ++k) {
        r->tok[t * K + k] = t;
        r->kept[t * K + k] = 1;
      }
      switch (spec.kind) {
        case ROUTER_TOKEN_CHOICE:
          route_token(spec, lg, e_bias, E, K, score, probs, r->work.data(), idx, w);
          break;
        case ROUTER_BASE:
        case ROUTER_SINKHORN:
        case ROUTER_REINFORCE:
          route_token_trained(spec, lg, E, K, train, r->log_d1.data(), seed, t0 + t, score, probs,
                              r->work.data(), idx, w);
          break;
        case ROUTER_NOISY_TOPK: {
          score_row(false, lg, E, score, probs);
          float* h = r->noisy.data() + static_cast<int64_t>(t) * E;
          float* dh = r->noise.data() + static_cast<int64_t>(t) * E;
          if (!train) {  // no noise: the clean logits (the noise logits may be absent)
            std::copy(lg, lg + E, h);
            std::fill(dh, dh + E, 0.0f);
          } else {
            const float* nl = noise_logits + static_cast<int64_t>(t) * E;
            for (int e = 0; e < E; ++e) {
              const float n =
                  static_cast<float>(rng_normal(seed, static_cast<uint64_t>(t0 + t) * E + e));
              const float sp = nl[e] > 20.0f ? nl[e] : std::log1p(std::exp(nl[e]));  // softplus
              h[e] = lg[e] + n * sp;
              dh[e] = n * op_sigmoid(nl[e]);  // dH / d noise_logit
            }
          }
          topk_indices(h, E, K, idx);
          for (int k = 0; k < K; ++k) w[k] = h[idx[k]];
          op_softmax(w, K);
          for (int k = 0; k < K; ++k) w[k] *= spec.scale;
          break;
        }
        case ROUTER_HASH:
        case ROUTER_RANDOM: {
          std::fill(score, score + E, 1.0f / E);
          std::fill(probs, probs + E, 1.0f / E);
          const uint64_t key =
              spec.kind == ROUTER_HASH
                  ? splitmix64(static_cast<uint64_t>(ids[t]) ^ 0x5851f42d4c957f2dULL)
                  : splitmix64(seed ^ splitmix64(static_cast<uint64_t>(t0 + t)));
          distinct_draws(key, E, K, idx);
          for (int k = 0; k < K; ++k) w[k] = spec.scale / K;
          break;
        }
        default:
          MOE_CHECK(false);
      }
    }
    if (capacity_factor > 0.0f) {
      r->capacity = static_cast<int>(capacity_for(N, K, E, capacity_factor));
      r->dropped = static_cast<int>(capacity_apply(r->tok.data(), r->expert.data(), r->w.data(),
                                                   r->A, E, r->capacity, r->kept.data(), nullptr,
                                                   r->iwork.data()));
    }
  }
  std::fill(r->sel_count.begin(), r->sel_count.end(), 0);
  std::fill(r->kept_count.begin(), r->kept_count.end(), 0);
  for (int a = 0; a < r->A; ++a) {
    ++r->sel_count[r->expert[a]];
    if (r->kept[a]) ++r->kept_count[r->expert[a]];
  }
}

namespace {

// Backward of a softmax row s = softmax(l): dl = s * (ds - <s, ds>), in place (g holds ds).
void softmax_row_backward(float* g, const float* s, int E) {
  float dot = 0.0f;
  for (int e = 0; e < E; ++e) dot += s[e] * g[e];
  for (int e = 0; e < E; ++e) g[e] = s[e] * (g[e] - dot);
}

// Accumulates grad of the balance-loss distribution p (row dp) into dl (row).
void probs_row_backward(bool sigmoid, const float* score, const float* probs, const float* dp,
                        float scale, float* dl, int E) {
  float dot = 0.0f;
  for (int e = 0; e < E; ++e) dot += probs[e] * dp[e];
  if (sigmoid) {
    float sum = 0.0f;
    for (int e = 0; e < E; ++e) sum += score[e];
    for (int e = 0; e < E; ++e)
      dl[e] += scale * (dp[e] - dot) / sum * score[e] * (1.0f - score[e]);
  } else {
    for (int e = 0; e < E; ++e) dl[e] += scale * probs[e] * (dp[e] - dot);
  }
}

bool has_logits(const RouterSpec& spec) {
  return spec.kind != ROUTER_HASH && spec.kind != ROUTER_RANDOM;
}

}  // namespace

void router_backward(const Routing& r, const RouterSpec& spec, const float* dw, float* dlogits,
                     float* dnoise_logits) {
  const int N = r.N, E = r.E, K = r.K;
  std::fill(dlogits, dlogits + static_cast<int64_t>(N) * E, 0.0f);
  if (dnoise_logits) std::fill(dnoise_logits, dnoise_logits + static_cast<int64_t>(N) * E, 0.0f);
  if (!has_logits(spec)) return;
  if (spec.kind == ROUTER_EXPERT_CHOICE) {
    for (int a = 0; a < r.A; ++a)
      dlogits[static_cast<int64_t>(r.tok[a]) * E + r.expert[a]] += spec.scale * dw[a];
    for (int t = 0; t < N; ++t)
      softmax_row_backward(dlogits + static_cast<int64_t>(t) * E,
                           r.score.data() + static_cast<int64_t>(t) * E, E);
    return;
  }
  for (int t = 0; t < N; ++t) {
    float* g = dlogits + static_cast<int64_t>(t) * E;
    const float* s = r.score.data() + static_cast<int64_t>(t) * E;
    const int32_t* idx = r.expert.data() + static_cast<int64_t>(t) * K;
    const float* w = r.w.data() + static_cast<int64_t>(t) * K;
    const float* d = dw + static_cast<int64_t>(t) * K;
    if (spec.kind == ROUTER_NOISY_TOPK || spec.topk_then_softmax) {
      // w = scale * softmax(z_sel): dz_k = w_k * (dw_k - sum_j w_j dw_j / scale)
      float dot = 0.0f;
      for (int k = 0; k < K; ++k) dot += w[k] * d[k];
      dot /= spec.scale;
      for (int k = 0; k < K; ++k) g[idx[k]] += w[k] * (d[k] - dot);
      if (spec.kind == ROUTER_NOISY_TOPK) {
        float* gn = dnoise_logits + static_cast<int64_t>(t) * E;
        const float* dh = r.noise.data() + static_cast<int64_t>(t) * E;
        for (int k = 0; k < K; ++k) gn[idx[k]] = g[idx[k]] * dh[idx[k]];
      }
      continue;
    }
    // w_k = scale * s_k / (sum_sel s + eps) if renormalised, else scale * s_k.
    if (spec.norm_topk) {
      float sum = 0.0f;
      for (int k = 0; k < K; ++k) sum += s[idx[k]];
      const float sn = sum + spec.norm_eps;
      float dot = 0.0f;
      for (int k = 0; k < K; ++k) dot += d[k] * s[idx[k]];
      for (int k = 0; k < K; ++k) g[idx[k]] += spec.scale / sn * (d[k] - dot / sn);
    } else {
      for (int k = 0; k < K; ++k) g[idx[k]] += spec.scale * d[k];
    }
    if (!sigmoid_scores(spec, K)) {
      softmax_row_backward(g, s, E);
    } else {
      for (int e = 0; e < E; ++e) g[e] *= s[e] * (1.0f - s[e]);
    }
  }
}

double router_aux_loss(const Routing& r, const RouterSpec& spec, float alpha, float grad_scale,
                       float* dlogits) {
  const int N = r.N, E = r.E, K = r.K;
  if (N == 0) return 0.0;
  float* f = r.work.data();  // (E) scratch
  float* P = f + E;                              // (E)
  float* dp = P + E;                             // (E)
  std::fill(P, P + E, 0.0f);
  for (int e = 0; e < E; ++e) f[e] = static_cast<float>(r.sel_count[e]) / (static_cast<float>(N) * K);
  for (int t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e) P[e] += r.probs[static_cast<int64_t>(t) * E + e];
  double loss = 0.0;
  for (int e = 0; e < E; ++e) loss += static_cast<double>(f[e]) * (P[e] / N);
  loss *= static_cast<double>(alpha) * E;
  if (dlogits && has_logits(spec)) {
    for (int e = 0; e < E; ++e) dp[e] = alpha * E * f[e] / N;
    for (int t = 0; t < N; ++t)
      probs_row_backward(sigmoid_scores(spec, K), r.score.data() + static_cast<int64_t>(t) * E,
                         r.probs.data() + static_cast<int64_t>(t) * E, dp, grad_scale,
                         dlogits + static_cast<int64_t>(t) * E, E);
  }
  return loss;
}

double router_z_loss(const float* logits, int N, int E, float beta, float grad_scale,
                     float* dlogits) {
  if (N == 0) return 0.0;
  double loss = 0.0;
  for (int t = 0; t < N; ++t) {
    const float* lg = logits + static_cast<int64_t>(t) * E;
    float mx = *std::max_element(lg, lg + E);
    double z = 0.0;
    for (int e = 0; e < E; ++e) z += std::exp(static_cast<double>(lg[e] - mx));
    const double lse = mx + std::log(z);
    loss += lse * lse;
    if (dlogits) {
      const float c = static_cast<float>(grad_scale * beta * 2.0 * lse / N);
      float* g = dlogits + static_cast<int64_t>(t) * E;
      for (int e = 0; e < E; ++e) g[e] += c * static_cast<float>(std::exp(lg[e] - lse));
    }
  }
  return beta * loss / N;
}

double router_seq_aux_loss(const Routing& r, const RouterSpec& spec, int seq_len, float alpha,
                           float grad_scale, float* dlogits) {
  const int N = r.N, E = r.E, K = r.K;
  if (N == 0) return 0.0;
  MOE_CHECK(seq_len > 0 && N % seq_len == 0);
  const int n_seq = N / seq_len;
  float* f = r.work.data();  // (E) scratch
  float* P = f + E;                              // (E)
  float* dp = P + E;                             // (E)
  double loss = 0.0;
  for (int sq = 0; sq < n_seq; ++sq) {
    const int t0 = sq * seq_len, t1 = t0 + seq_len;
    std::fill(f, f + E, 0.0f);
    std::fill(P, P + E, 0.0f);
    for (int a = 0; a < r.A; ++a)
      if (r.tok[a] >= t0 && r.tok[a] < t1) f[r.expert[a]] += 1.0f;
    for (int e = 0; e < E; ++e) f[e] *= static_cast<float>(E) / (static_cast<float>(K) * seq_len);
    for (int t = t0; t < t1; ++t)
      for (int e = 0; e < E; ++e) P[e] += r.probs[static_cast<int64_t>(t) * E + e] / seq_len;
    double ls = 0.0;
    for (int e = 0; e < E; ++e) ls += static_cast<double>(f[e]) * P[e];
    loss += ls;
    if (dlogits && has_logits(spec)) {
      for (int e = 0; e < E; ++e) dp[e] = alpha * f[e] / (static_cast<float>(seq_len) * n_seq);
      for (int t = t0; t < t1; ++t)
        probs_row_backward(sigmoid_scores(spec, K), r.score.data() + static_cast<int64_t>(t) * E,
                           r.probs.data() + static_cast<int64_t>(t) * E, dp, grad_scale,
                           dlogits + static_cast<int64_t>(t) * E, E);
    }
  }
  return alpha * loss / n_seq;
}

namespace {

// alpha * sum_d fd[d] * P'_d, where P'_d is the mean probability of device d's experts (the
// D = n_devices contiguous groups), and its gradient through P' only (fd counts selections):
// the tail of the device-level and communication losses. fd (D) sits at r.work[0, D).
double device_mass_loss(const Routing& r, const RouterSpec& spec, int n_devices, float alpha,
                        float grad_scale, float* dlogits) {
  const int N = r.N, E = r.E, K = r.K, per = E / n_devices;
  const float* fd = r.work.data();  // (D)
  float* Pd = r.work.data() + E;    // (D)
  float* dp = Pd + E;               // (E)
  std::fill(Pd, Pd + n_devices, 0.0f);
  for (int t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e) Pd[e / per] += r.probs[static_cast<int64_t>(t) * E + e] / N;
  double loss = 0.0;
  for (int d = 0; d < n_devices; ++d) loss += static_cast<double>(fd[d]) * Pd[d];
  if (dlogits && has_logits(spec)) {
    for (int e = 0; e < E; ++e) dp[e] = alpha * fd[e / per] / N;
    for (int t = 0; t < N; ++t)
      probs_row_backward(sigmoid_scores(spec, K), r.score.data() + static_cast<int64_t>(t) * E,
                         r.probs.data() + static_cast<int64_t>(t) * E, dp, grad_scale,
                         dlogits + static_cast<int64_t>(t) * E, E);
  }
  return alpha * loss;
}

}  // namespace

double router_device_loss(const Routing& r, const RouterSpec& spec, int n_devices, float alpha,
                          float grad_scale, float* dlogits) {
  const int N = r.N, E = r.E, K = r.K;
  if (N == 0) return 0.0;
  MOE_CHECK(n_devices > 0 && E % n_devices == 0);
  const int per = E / n_devices;
  float* fd = r.work.data();  // (D <= E) f'_d
  std::fill(fd, fd + n_devices, 0.0f);
  for (int e = 0; e < E; ++e)
    fd[e / per] += static_cast<float>(r.sel_count[e]) * E / (static_cast<float>(K) * N) / per;
  return device_mass_loss(r, spec, n_devices, alpha, grad_scale, dlogits);
}

double router_comm_loss(const Routing& r, const RouterSpec& spec, int n_devices, int max_devices,
                        float alpha, float grad_scale, float* dlogits) {
  const int N = r.N, E = r.E, K = r.K;
  if (N == 0) return 0.0;
  MOE_CHECK(n_devices > 0 && E % n_devices == 0);
  const int per = E / n_devices;
  const int M = max_devices > 0 ? std::min(max_devices, n_devices) : std::min(K, n_devices);
  float* fd = r.work.data();                 // (D <= E) f''_d
  float* last = r.work.data() + 4 * E + 64;  // (N) 1 + the last device token t was counted on
  std::fill(fd, fd + n_devices, 0.0f);
  std::fill(last, last + N, 0.0f);
  // Tokens sent to device d: those with at least one selected expert on it (before dropping).
  for (int d = 0; d < n_devices; ++d)
    for (int a = 0; a < r.A; ++a) {
      const int t = r.tok[a];
      if (r.expert[a] / per != d || last[t] == static_cast<float>(d + 1)) continue;
      last[t] = static_cast<float>(d + 1);
      fd[d] += 1.0f;
    }
  for (int d = 0; d < n_devices; ++d) fd[d] *= static_cast<float>(n_devices) / (static_cast<float>(M) * N);
  return device_mass_loss(r, spec, n_devices, alpha, grad_scale, dlogits);
}

}  // namespace moe
