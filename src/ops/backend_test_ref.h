// Double-precision references for the op harness (backend_test.cpp), written from each op's
// documented definition (ops.h, linear.h, router.h, experts.h) and not from the CPU kernels, plus
// the harness's helpers (random tensors, comparisons, central finite differences) and inputs
// (the routing cases, YaRN's inv_freq, expert sets in every storage type).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/specs.h"
#include "core/dtype.h"
#include "quant/ggml_types.h"
#include "quant/quant.h"
#include "quant/weight_view.h"

namespace moe::ref {

using Vec = std::vector<double>;
using Tensors = std::vector<Vec>;

// n samples N(0, scale^2), deterministic in seed.
inline std::vector<float> rnd(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

inline Vec to_d(const std::vector<float>& v) {
  return Vec(v.begin(), v.end());
}

// max |got - want| <= tol * max(1, max |want|) (want in double).
inline void expect_close(const float* got, const Vec& want, double tol, const std::string& what) {
  double worst = 0.0, scale = 1.0;
  size_t at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(e <= worst)) worst = e, at = i;  // NaN ranks worst
  }
  EXPECT_LE(worst, tol * scale) << what << ": worst at " << at << " got " << got[at] << " want "
                                << want[at] << " (n " << want.size() << ")";
}

// Central differences of f with respect to in[which], each element moved by +-h in double.
inline Vec fd_grad(const std::function<double(const Tensors&)>& f, Tensors in, size_t which,
                   double h = 1e-6) {
  Vec g(in[which].size());
  for (size_t i = 0; i < g.size(); ++i) {
    const double x0 = in[which][i];
    in[which][i] = x0 + h;
    const double lp = f(in);
    in[which][i] = x0 - h;
    const double lm = f(in);
    in[which][i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

// An analytic float gradient against finite differences: got - prefill (the value a parameter
// gradient was filled with before accumulating, 0 for activation gradients) against want, to
// tol * max |want|. A gradient that (nearly) vanishes, e.g. rmsnorm's dx for D = 1 or a balance
// loss under expert choice, where every expert's count is the same, is compared to tol * floor:
// its float value is then the rounding residue of terms of order one.
inline void expect_grad(const float* got, const Vec& want, double prefill, double tol,
                        const std::string& what, double floor = 1e-3) {
  double mx = floor, worst = 0.0;
  size_t at = 0;
  for (double w : want) mx = std::max(mx, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - prefill - want[i]);
    if (!(e <= worst)) worst = e, at = i;
  }
  EXPECT_LE(worst, tol * mx) << what << ": worst at " << at << " got " << got[at] - prefill
                             << " want " << want[at] << " (max |g| " << mx << ")";
}

// sum_i coef[i] * y[i].
inline double dot(const Vec& coef, const Vec& y) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += coef[i] * y[i];
  return s;
}

inline double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}
inline double silu(double x) {
  return x * sigmoid(x);
}

// A row quantized to Q8_0 and back: the rounding the dot path applies to its inputs.
inline std::vector<float> q8_round(const float* x, int64_t n) {
  std::vector<uint8_t> q(static_cast<size_t>(qtype_row_bytes(QT_Q8_0, n)));
  std::vector<float> y(static_cast<size_t>(n));
  quantize_row_q8_0(x, q.data(), n);
  dequantize_row_q8_0(q.data(), y.data(), n);
  return y;
}

// y (T, N) = x (T, K) W (N, K)^T + b; b empty for none.
inline Vec linear(const Vec& x, const Vec& w, const Vec& b, int T, int N, int K) {
  Vec y(static_cast<size_t>(T) * N);
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) {
      double s = b.empty() ? 0.0 : b[n];
      for (int k = 0; k < K; ++k)
        s += x[static_cast<size_t>(t) * K + k] * w[static_cast<size_t>(n) * K + k];
      y[static_cast<size_t>(t) * N + n] = s;
    }
  return y;
}

// y (T, D) = x / sqrt(mean(x^2) + eps) * w.
inline Vec rmsnorm(const Vec& x, const Vec& w, int T, int D, double eps) {
  Vec y(x.size());
  for (int t = 0; t < T; ++t) {
    double ss = 0.0;
    for (int i = 0; i < D; ++i) ss += x[t * D + i] * x[t * D + i];
    const double r = 1.0 / std::sqrt(ss / D + eps);
    for (int i = 0; i < D; ++i) y[t * D + i] = x[t * D + i] * r * w[i];
  }
  return y;
}

// Rotation of R dims per head (pairs (i, i + R/2) or (2i, 2i + 1)) by the angle whose cos/sin
// (T, R/2) are given; x laid out as op_rope's (row_stride, head_stride).
inline Vec rope(Vec x, int T, int H, int64_t row_stride, int head_stride, int R, const Vec& c,
                const Vec& s, RopeLayout layout) {
  const int half = R / 2;
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      double* v = x.data() + t * row_stride + static_cast<int64_t>(h) * head_stride;
      for (int i = 0; i < half; ++i) {
        const int ia = layout == ROPE_HALF ? i : 2 * i,
                  ib = layout == ROPE_HALF ? i + half : 2 * i + 1;
        const double a = v[ia], b = v[ib], ci = c[t * half + i], si = s[t * half + i];
        v[ia] = a * ci - b * si;
        v[ib] = b * ci + a * si;
      }
    }
  return x;
}

// Causal GQA attention (op_attention's definition): out (T, H, dv), probs (T, H, C).
inline void attention(Vec* out, Vec* probs, const Vec& q, const Vec& k, const Vec& v, int T,
                      int pos0, int H, int KV, int dq, int dv, double scale, int window,
                      const Vec* sinks) {
  const int C = pos0 + T, rep = H / KV;
  out->assign(static_cast<size_t>(T) * H * dv, 0.0);
  probs->assign(static_cast<size_t>(T) * H * C, 0.0);
  Vec s(C);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const int pos = pos0 + t, lo = window > 0 ? std::max(0, pos - window + 1) : 0, g = h / rep;
      double mx = sinks ? (*sinks)[h] : -std::numeric_limits<double>::infinity();
      for (int j = lo; j <= pos; ++j) {
        double d = 0.0;
        for (int i = 0; i < dq; ++i) d += q[(t * H + h) * dq + i] * k[(j * KV + g) * dq + i];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      double z = sinks ? std::exp((*sinks)[h] - mx) : 0.0;
      for (int j = lo; j <= pos; ++j) z += (s[j] = std::exp(s[j] - mx));
      for (int j = lo; j <= pos; ++j) {
        const double p = s[j] / z;
        (*probs)[(static_cast<size_t>(t) * H + h) * C + j] = p;
        for (int i = 0; i < dv; ++i) (*out)[(t * H + h) * dv + i] += p * v[(j * KV + g) * dv + i];
      }
    }
}

// MLA over the compressed cache: score_j = (qlat . cc_j + qpe . kpe_j) * scale, causal softmax,
// olat (T, H, Lc) = sum_j p_j cc_j.
inline Vec mla(const Vec& qlat, const Vec& qpe, const Vec& cc, const Vec& kpe, int T, int pos0,
               int H, int Lc, int R, double scale) {
  Vec o(static_cast<size_t>(T) * H * Lc, 0.0), s(pos0 + T);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      double mx = -std::numeric_limits<double>::infinity(), z = 0.0;
      for (int j = 0; j <= pos0 + t; ++j) {
        double d = 0.0;
        for (int i = 0; i < Lc; ++i) d += qlat[(t * H + h) * Lc + i] * cc[j * Lc + i];
        for (int i = 0; i < R; ++i) d += qpe[(t * H + h) * R + i] * kpe[j * R + i];
        mx = std::max(mx, s[j] = d * scale);
      }
      for (int j = 0; j <= pos0 + t; ++j) z += (s[j] = std::exp(s[j] - mx));
      for (int j = 0; j <= pos0 + t; ++j)
        for (int i = 0; i < Lc; ++i) o[(t * H + h) * Lc + i] += s[j] / z * cc[j * Lc + i];
    }
  return o;
}

// The expert activation (experts.h): silu(g) u, or gpt-oss's clamped form.
inline double act(const ExpertFfnSpec& f, double g, double u) {
  if (f.act == ACT_SWIGLU) return silu(g) * u;
  const double lim = f.limit, gl = std::min(g, lim), ul = std::max(-lim, std::min(u, lim));
  return (ul + 1.0) * gl * sigmoid(f.alpha * gl);
}

// Mean cross-entropy over targets >= 0, times scale.
inline double cross_entropy(const Vec& lg, const std::vector<int32_t>& tg, int T, int V,
                            double scale) {
  double sum = 0.0;
  int n = 0;
  for (int t = 0; t < T; ++t) {
    if (tg[t] < 0) continue;
    double mx = lg[t * V];
    for (int i = 1; i < V; ++i) mx = std::max(mx, lg[t * V + i]);
    double z = 0.0;
    for (int i = 0; i < V; ++i) z += std::exp(lg[t * V + i] - mx);
    sum += mx + std::log(z) - lg[t * V + tg[t]];
    ++n;
  }
  return n ? scale * sum / n : 0.0;
}

// ---- Routing (router.h's conventions) ----

// Indices of the k largest of a, largest first, ties to the lower index.
inline std::vector<int> topk(const Vec& a, int k) {
  std::vector<int> idx(a.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int i, int j) { return a[i] > a[j]; });
  idx.resize(k);
  return idx;
}

inline void softmax(double* x, int n) {
  double mx = *std::max_element(x, x + n), z = 0.0;
  for (int i = 0; i < n; ++i) z += (x[i] = std::exp(x[i] - mx));
  for (int i = 0; i < n; ++i) x[i] /= z;
}

struct Route {
  std::vector<int> tok, expert;  // (A)
  Vec w;                         // (A)
  std::vector<char> kept;        // (A)
  Vec probs;                     // (N, E) the balance losses' distribution
  std::vector<int> sel_count;    // (E)
  int capacity = 0, dropped = 0;
};

// Token choice for one token: experts (largest selection score first) and weights.
inline void route_token(const RouterSpec& spec, const double* lg, const Vec& bias, int E, int K,
                        double* probs, std::vector<int>* idx, Vec* w) {
  Vec s(lg, lg + E);
  if (spec.score == SCORE_SOFTMAX || spec.topk_then_softmax) {
    softmax(s.data(), E);
    std::copy(s.begin(), s.end(), probs);
  } else {
    double sum = 0.0;
    for (double& v : s) sum += (v = sigmoid(v));
    for (int e = 0; e < E; ++e) probs[e] = s[e] / sum;
  }
  if (spec.topk_then_softmax) {
    *idx = topk(Vec(lg, lg + E), K);
    w->resize(K);
    for (int k = 0; k < K; ++k) (*w)[k] = lg[(*idx)[k]];
    softmax(w->data(), K);
    for (double& v : *w) v *= spec.scale;
    return;
  }
  Vec sel(s);
  for (int e = 0; e < E && !bias.empty(); ++e) sel[e] += bias[e];
  if (spec.group != GROUP_NONE) {
    const int gs = E / spec.n_group;
    Vec gsc(spec.n_group);
    for (int g = 0; g < spec.n_group; ++g) {
      Vec part(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
      const auto two = topk(part, 2);
      gsc[g] = spec.group == GROUP_MAX ? part[two[0]] : part[two[0]] + part[two[1]];
    }
    const auto keep = topk(gsc, spec.topk_group);
    for (int g = 0; g < spec.n_group; ++g)
      if (std::find(keep.begin(), keep.end(), g) == keep.end())
        std::fill(sel.begin() + g * gs, sel.begin() + (g + 1) * gs, -1e300);
  }
  *idx = topk(sel, K);
  w->resize(K);
  double sum = 0.0;
  for (int k = 0; k < K; ++k) sum += ((*w)[k] = s[(*idx)[k]]);
  for (double& v : *w) v *= (spec.norm_topk ? 1.0 / (sum + spec.norm_eps) : 1.0) * spec.scale;
}

// Over capacity C, an expert keeps its highest-weight assignments (ties: lower token).
inline void apply_capacity(Route* r, int E, int C) {
  for (int e = 0; e < E; ++e) {
    std::vector<int> as;
    for (size_t a = 0; a < r->w.size(); ++a)
      if (r->expert[a] == e) as.push_back(static_cast<int>(a));
    std::stable_sort(as.begin(), as.end(), [&](int a, int b) {
      return r->w[a] > r->w[b] || (r->w[a] == r->w[b] && r->tok[a] < r->tok[b]);
    });
    for (size_t i = C; i < as.size(); ++i) r->kept[as[i]] = 0, ++r->dropped;
  }
}

// Every token-choice router kind of the harness, and expert choice.
inline Route route(const RouterSpec& spec, const Vec& lg, const Vec& bias, int N, int E, int K,
                   double capacity_factor) {
  Route r;
  r.probs.assign(static_cast<size_t>(N) * E, 0.0);
  if (spec.kind == ROUTER_EXPERT_CHOICE) {
    for (int t = 0; t < N; ++t) {
      std::copy(lg.begin() + t * E, lg.begin() + (t + 1) * E, r.probs.begin() + t * E);
      softmax(r.probs.data() + t * E, E);
    }
    int C = static_cast<int>(
        std::ceil(static_cast<double>(N) * K / E * std::max(1.0, capacity_factor)));
    C = std::max(1, std::min({C, N, N * K / E}));
    r.capacity = C;
    for (int e = 0; e < E; ++e) {
      Vec col(N);
      for (int t = 0; t < N; ++t) col[t] = r.probs[t * E + e];
      for (int t : topk(col, C)) {
        r.tok.push_back(t), r.expert.push_back(e), r.w.push_back(col[t] * spec.scale);
      }
    }
  } else {
    for (int t = 0; t < N; ++t) {
      std::vector<int> idx;
      Vec w;
      route_token(spec, lg.data() + t * E, bias, E, K, r.probs.data() + t * E, &idx, &w);
      for (int k = 0; k < K; ++k)
        r.tok.push_back(t), r.expert.push_back(idx[k]), r.w.push_back(w[k]);
    }
  }
  r.kept.assign(r.w.size(), 1);
  if (spec.kind != ROUTER_EXPERT_CHOICE && capacity_factor > 0) {
    r.capacity = static_cast<int>(std::ceil(static_cast<double>(N) * K / E * capacity_factor));
    apply_capacity(&r, E, r.capacity);
  }
  r.sel_count.assign(E, 0);
  for (int e : r.expert) ++r.sel_count[e];
  return r;
}

// P_i = mean_t probs[t, i] over tokens t0..t1.
inline Vec mean_probs(const Route& r, int E, int t0, int t1) {
  Vec P(E, 0.0);
  for (int t = t0; t < t1; ++t)
    for (int e = 0; e < E; ++e) P[e] += r.probs[t * E + e] / (t1 - t0);
  return P;
}

// Switch aux loss: alpha E sum_i f_i P_i, f_i = selections / (N K).
inline double aux_loss(const Route& r, int N, int E, int K, double alpha) {
  const Vec P = mean_probs(r, E, 0, N);
  double L = 0.0;
  for (int e = 0; e < E; ++e) L += r.sel_count[e] / static_cast<double>(N * K) * P[e];
  return alpha * E * L;
}

// z-loss: beta mean_t logsumexp(logits_t)^2.
inline double z_loss(const Vec& lg, int N, int E, double beta) {
  double L = 0.0;
  for (int t = 0; t < N; ++t) {
    double mx = *std::max_element(lg.begin() + t * E, lg.begin() + (t + 1) * E), z = 0.0;
    for (int e = 0; e < E; ++e) z += std::exp(lg[t * E + e] - mx);
    L += (mx + std::log(z)) * (mx + std::log(z));
  }
  return beta * L / N;
}

// Sequence-wise aux loss: per sequence f_i = E/(K T) selections in it, P_i its mean probs;
// alpha times the mean over sequences of sum_i f_i P_i.
inline double seq_aux_loss(const Route& r, int N, int E, int K, int T, double alpha) {
  double L = 0.0;
  for (int s = 0; s < N / T; ++s) {
    Vec f(E, 0.0);
    for (size_t a = 0; a < r.tok.size(); ++a)
      if (r.tok[a] / T == s) f[r.expert[a]] += static_cast<double>(E) / (K * T);
    const Vec P = mean_probs(r, E, s * T, (s + 1) * T);
    for (int e = 0; e < E; ++e) L += f[e] * P[e];
  }
  return alpha * L / (N / T);
}

// Device-level loss: f'_d = mean of f_i = E/(K N) selections over group d, P'_d = sum of P_i.
inline double device_loss(const Route& r, int N, int E, int K, int D, double alpha) {
  const Vec P = mean_probs(r, E, 0, N);
  const int per = E / D;
  double L = 0.0;
  for (int d = 0; d < D; ++d) {
    double f = 0.0, p = 0.0;
    for (int e = d * per; e < (d + 1) * per; ++e) {
      f += r.sel_count[e] * static_cast<double>(E) / (K * N) / per;
      p += P[e];
    }
    L += f * p;
  }
  return alpha * L;
}

// REINFORCE routing's surrogate (router.h, router_reinforce_grad): -sum_t adv_t log pi(S_t) -
// beta/N sum_t H(p_t), p_t = softmax(lg_t), pi the Plackett-Luce probability of the ordered draws
// drawn (N, K): prod_k p[s_k] / (1 - sum_{j<k} p[s_j]).
inline double reinforce_surrogate(const Vec& lg, int N, int E, int K, const std::vector<int>& drawn,
                                  const std::vector<float>& adv, double beta) {
  double L = 0.0;
  Vec p(E);
  for (int t = 0; t < N; ++t) {
    std::copy(lg.begin() + t * E, lg.begin() + (t + 1) * E, p.begin());
    softmax(p.data(), E);
    double H = 0.0, logpi = 0.0, before = 0.0;
    for (int e = 0; e < E; ++e) H -= p[e] * std::log(p[e]);
    for (int k = 0; k < K; ++k) {
      const int e = drawn[t * K + k];
      logpi += std::log(p[e]) - std::log(1.0 - before);
      before += p[e];
    }
    L += -adv[t] * logpi - beta / N * H;
  }
  return L;
}

// Communication balance loss (DeepSeek-V2): f''_d = D/(M N) * tokens with a selected expert on
// device d, P''_d = sum of P_i over d's experts; M = max_devices, or min(K, D) when 0.
inline double comm_loss(const Route& r, int N, int E, int K, int D, int max_devices, double alpha) {
  const Vec P = mean_probs(r, E, 0, N);
  const int per = E / D, M = max_devices > 0 ? std::min(max_devices, D) : std::min(K, D);
  std::vector<std::vector<char>> sent(N, std::vector<char>(D, 0));  // (N, D)
  for (size_t a = 0; a < r.tok.size(); ++a) sent[r.tok[a]][r.expert[a] / per] = 1;
  double L = 0.0;
  for (int d = 0; d < D; ++d) {
    double f = 0.0, p = 0.0;
    for (int t = 0; t < N; ++t) f += sent[t][d];
    for (int e = d * per; e < (d + 1) * per; ++e) p += P[e];
    L += f * D / (static_cast<double>(M) * N) * p;
  }
  return alpha * L;
}

// ---- The documented draws of hash, random and noisy routing (router.h, core/rng.h) ----

inline uint64_t mix64(uint64_t x) {  // SplitMix64's output function
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline double uniform(uint64_t seed, uint64_t i) {
  return std::ldexp(static_cast<double>(mix64(seed * 0xd1342543de82ef95ULL + i) >> 11), -53);
}

inline double normal(uint64_t seed, uint64_t i) {
  return std::sqrt(-2.0 * std::log(1.0 - uniform(seed, 2 * i))) *
         std::cos(2.0 * M_PI * uniform(seed, 2 * i + 1));
}

// The first K distinct values of mix64(key + 0x632be59bd9b4e019 n) mod E, n = 0, 1, ...
inline std::vector<int> distinct_draws(uint64_t key, int E, int K) {
  std::vector<int> out;
  for (uint64_t n = 0; static_cast<int>(out.size()) < K; ++n) {
    const int e = static_cast<int>(mix64(key + 0x632be59bd9b4e019ULL * n) % E);
    if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  }
  return out;
}

// Hash routing's experts for token id x; random routing's for token t0 + t.
inline std::vector<int> hash_experts(int64_t x, int E, int K) {
  return distinct_draws(mix64(static_cast<uint64_t>(x) ^ 0x5851f42d4c957f2dULL), E, K);
}
inline std::vector<int> random_experts(uint64_t seed, int64_t pos, int E, int K) {
  return distinct_draws(mix64(seed ^ mix64(static_cast<uint64_t>(pos))), E, K);
}

// ---- Inputs of the harness ----

// The routers of the harness: every token-choice kind of the seven families, expert choice,
// capacity dropping; each with a sequence length and a device count for the losses.
struct RouteCase {
  const char* name;
  RouterSpec spec;
  int N, E, K, seq_len, n_dev;
  float capacity_factor;
  bool bias;  // a selection-only correction bias
};

inline std::vector<RouteCase> route_cases() {
  std::vector<RouteCase> cs;
  RouterSpec s;
  cs.push_back({"softmax_topk", s, 5, 8, 2, 5, 4, 0.0f, false});
  s.norm_topk = true;
  cs.push_back({"softmax_topk_renorm", s, 1, 6, 3, 1, 3, 0.0f, false});
  cs.push_back({"softmax_topk_renorm_T6", s, 6, 7, 3, 3, 7, 0.0f, false});
  RouterSpec g;
  g.group = GROUP_MAX, g.n_group = 4, g.topk_group = 2, g.scale = 2.5f;  // DeepSeek-V2: no renorm
  cs.push_back({"softmax_group_max", g, 6, 8, 2, 2, 2, 0.0f, false});
  RouterSpec d;  // DeepSeek-V3
  d.score = SCORE_SIGMOID, d.has_correction_bias = true, d.group = GROUP_TOP2_SUM;
  d.n_group = 4, d.topk_group = 2, d.norm_topk = true, d.norm_eps = 1e-20f, d.scale = 2.5f;
  cs.push_back({"sigmoid_bias_group_scale", d, 7, 8, 3, 7, 4, 0.0f, true});
  RouterSpec sg;
  sg.score = SCORE_SIGMOID, sg.scale = 1.7f;
  cs.push_back({"sigmoid_plain", sg, 4, 5, 2, 2, 5, 0.0f, false});
  RouterSpec o;  // gpt-oss: top-k of the logits, softmax over the K
  o.topk_then_softmax = true, o.scale = 1.5f;
  cs.push_back({"topk_then_softmax", o, 9, 5, 2, 3, 5, 0.0f, false});
  RouterSpec e;
  e.kind = ROUTER_EXPERT_CHOICE, e.scale = 1.25f;
  cs.push_back({"expert_choice", e, 6, 4, 2, 3, 2, 1.0f, false});
  cs.push_back({"expert_choice_one_token", e, 1, 4, 2, 1, 2, 2.0f, false});
  cs.push_back({"softmax_topk_capacity", RouterSpec{}, 9, 4, 2, 3, 2, 1.0f, false});
  return cs;
}

// Logits (N, E) and bias (E) of a case (fixed seeds; their selection gaps are far above the
// finite-difference step, so the selections hold under it).
inline void route_inputs(const RouteCase& c, std::vector<float>* lg, std::vector<float>* bias) {
  *lg = rnd(static_cast<size_t>(c.N) * c.E, 101 + c.N * 7 + c.E, 1.5f);
  *bias = c.bias ? rnd(c.E, 102, 0.1f) : std::vector<float>{};
}

// inv_freq as transformers computes it, YaRN's blend included (a rope_table input).
inline RopeSpec rope_spec(bool yarn, int dim) {
  RopeSpec r;
  r.dim = dim;
  r.theta = 10000.0;
  const int half = dim / 2;
  if (!yarn) {
    for (int i = 0; i < half; ++i)
      r.inv_freq.push_back(static_cast<float>(1.0 / std::pow(r.theta, 2.0 * i / dim)));
    return r;
  }
  r.type = "yarn", r.factor = 8.0, r.orig_max_pos = 64.0;
  auto corr = [&](double rot) {
    return dim * std::log(r.orig_max_pos / (rot * 2 * M_PI)) / (2 * std::log(r.theta));
  };
  const double lo = std::max(0.0, std::floor(corr(r.beta_fast)));
  double hi = std::min(dim - 1.0, std::ceil(corr(r.beta_slow)));
  if (hi == lo) hi += 0.001;
  for (int i = 0; i < half; ++i) {
    const double pf = std::pow(r.theta, 2.0 * i / dim);
    const double ramp = std::min(1.0, std::max(0.0, (i - lo) / (hi - lo)));
    const double ex = 1.0 - ramp;
    r.inv_freq.push_back(static_cast<float>(1.0 / (r.factor * pf) * (1 - ex) + 1.0 / pf * ex));
  }
  r.attention_factor = 0.1 * std::log(r.factor) + 1.0;
  return r;
}

// The weights of E experts as fp32 (dequantized for raw types: what the kernels see) and, for a
// raw type, their rows.
struct ExpertSet {
  ExpertFfnSpec f;
  int E = 0;
  std::vector<std::vector<float>> wg, wu, wd, bg, bu, bd;  // [E] (F, D), (F, D), (D, F), biases
  std::vector<std::vector<uint8_t>> raw;                   // [3E] gate, up, down rows
  std::vector<ExpertWeights> ew;                           // [E]
};

// Random rows of a GGUF block type (the engine has no quantizer for them): random bytes with
// the fp16 scales (and MXFP4's exponent) set to values that keep the weights within about +-1.
inline void random_ggml_rows(QType t, uint8_t* dst, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 g(seed);
  const int64_t bytes = rows * qtype_row_bytes(t, cols);
  for (int64_t i = 0; i < bytes; ++i) dst[i] = static_cast<uint8_t>(g());
  auto f16 = [](uint8_t* p, float v) {
    const uint16_t h = f32_to_f16(v);
    p[0] = static_cast<uint8_t>(h & 0xff), p[1] = static_cast<uint8_t>(h >> 8);
  };
  if (t == QT_F16) {
    std::normal_distribution<float> d(0.0f, 0.3f);
    for (int64_t i = 0; i < rows * cols; ++i) f16(dst + 2 * i, d(g));
    return;
  }
  const int bb = qtype_block_bytes(t);
  for (uint8_t* b = dst; b < dst + bytes; b += bb) {
    switch (t) {
      case QT_Q4_1: f16(b, 0.02f), f16(b + 2, -0.15f); break;
      case QT_Q5_0: f16(b, 0.01f); break;
      case QT_Q5_1: f16(b, 0.01f), f16(b + 2, -0.15f); break;
      case QT_Q2_K: f16(b + 80, 0.01f), f16(b + 82, 0.01f); break;
      case QT_Q3_K: f16(b + 108, 0.002f); break;
      case QT_Q4_K: f16(b, 0.0005f), f16(b + 2, 0.0005f); break;
      case QT_Q5_K: f16(b, 0.0003f), f16(b + 2, 0.0005f); break;
      case QT_Q6_K: f16(b + 208, 0.0002f); break;
      case QT_MXFP4: b[0] = 122; break;
      default: ADD_FAILURE() << "random_ggml_rows: " << qtype_name(t);
    }
  }
}

inline std::vector<float> make_matrix(QType t, int rows, int cols, uint32_t seed,
                                      std::vector<uint8_t>* raw, QWeight* q) {
  std::vector<float> w = rnd(static_cast<size_t>(rows) * cols, seed, 0.3f);
  if (t == QT_F32) return w;
  const int64_t rb = qtype_row_bytes(t, cols);
  raw->resize(static_cast<size_t>(rows * rb));
  if (qtype_is_ggml(t)) random_ggml_rows(t, raw->data(), rows, cols, seed);
  for (int r = 0; r < rows; ++r) {
    if (!qtype_is_ggml(t))
      quantize_row(t, w.data() + static_cast<size_t>(r) * cols, raw->data() + r * rb, cols);
    dequantize_row(t, raw->data() + r * rb, w.data() + static_cast<size_t>(r) * cols, cols);
  }
  *q = QWeight{t, raw->data(), rb};
  return w;
}

inline void make_experts(ExpertSet* s, QType t, bool biases) {
  const int D = s->f.hidden, F = s->f.ffn, E = s->E;
  s->raw.resize(3 * E);
  s->ew.assign(E, ExpertWeights{});
  for (int e = 0; e < E; ++e) {
    ExpertWeights& w = s->ew[e];
    s->wg.push_back(make_matrix(t, F, D, 200 + e, &s->raw[3 * e], &w.gate_q));
    s->wu.push_back(make_matrix(t, F, D, 300 + e, &s->raw[3 * e + 1], &w.up_q));
    s->wd.push_back(make_matrix(t, D, F, 400 + e, &s->raw[3 * e + 2], &w.down_q));
    s->bg.push_back(biases ? rnd(F, 500 + e, 0.5f) : std::vector<float>(F, 0.0f));
    s->bu.push_back(biases ? rnd(F, 600 + e, 0.5f) : std::vector<float>(F, 0.0f));
    s->bd.push_back(biases ? rnd(D, 700 + e, 0.5f) : std::vector<float>(D, 0.0f));
  }
  for (int e = 0; e < E; ++e) {
    ExpertWeights& w = s->ew[e];
    if (t == QT_F32) w.gate = s->wg[e].data(), w.up = s->wu[e].data(), w.down = s->wd[e].data();
    if (biases) w.gate_b = s->bg[e].data(), w.up_b = s->bu[e].data(), w.down_b = s->bd[e].data();
  }
}

// One row of FFN_e in double; q8_in / q8_h: round the input / the activation to Q8_0 first (the
// dot path of block types).
inline Vec expert_row(const ExpertSet& s, int e, const float* x, bool q8_in, bool q8_h) {
  const int D = s.f.hidden, F = s.f.ffn;
  const std::vector<float> xr = q8_in ? ref::q8_round(x, D) : std::vector<float>(x, x + D);
  std::vector<float> hf(F);
  Vec h(F), y(D);
  for (int j = 0; j < F; ++j) {
    double g = s.bg[e][j], u = s.bu[e][j];
    for (int i = 0; i < D; ++i) {
      g += static_cast<double>(s.wg[e][j * D + i]) * xr[i];
      u += static_cast<double>(s.wu[e][j * D + i]) * xr[i];
    }
    hf[j] = static_cast<float>(h[j] = ref::act(s.f, g, u));
  }
  if (q8_h) h = to_d(ref::q8_round(hf.data(), F));
  for (int i = 0; i < D; ++i) {
    y[i] = s.bd[e][i];
    for (int j = 0; j < F; ++j) y[i] += s.wd[e][i * F + j] * h[j];
  }
  return y;
}

}  // namespace moe::ref
