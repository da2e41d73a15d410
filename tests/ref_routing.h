// Plain reference routing rules for tests, in double precision, written from the definitions
// (src/ops/router.h, RouterKind in src/core/specs.h) and sharing no code with src/moe: router
// logits x W^T, a sort-based top-k (largest first, ties to the lower index), softmax top-k with
// and without renormalisation, top-k then softmax (noisy top-k without noise), and expert choice.
// A test compares the experts and weights a router under test chose against these.
//
// Legend: N tokens, D model width, E experts, K experts per token, C expert-choice capacity.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace moe_test {

// logits (N, E) = x (N, D) W^T, W (E, D), accumulated in double.
inline std::vector<double> ref_router_logits(const float* W, const float* x, int N, int E, int D) {
  std::vector<double> out(static_cast<size_t>(N) * E);
  for (int t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e) {
      double s = 0.0;
      for (int i = 0; i < D; ++i)
        s += static_cast<double>(W[static_cast<size_t>(e) * D + i]) *
             x[static_cast<size_t>(t) * D + i];
      out[static_cast<size_t>(t) * E + e] = s;
    }
  return out;
}

// Indices of the k largest of v[0..n), largest first; equal values: the lower index first.
inline std::vector<int> ref_topk(const double* v, int n, int k) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
  order.resize(k);
  return order;
}

inline std::vector<double> ref_softmax(const double* v, int n) {
  const double mx = *std::max_element(v, v + n);
  std::vector<double> p(n);
  double z = 0.0;
  for (int i = 0; i < n; ++i) z += (p[i] = std::exp(v[i] - mx));
  for (double& x : p) x /= z;
  return p;
}

// One token's experts and combine weights.
struct RefChoice {
  std::vector<int> expert;  // (K)
  std::vector<double> w;    // (K)
};

// Softmax over all E logits, the K most probable experts, weights = scale * their probabilities,
// renormalised over the K when norm_topk.
inline RefChoice ref_softmax_topk(const double* logits, int E, int K, bool norm_topk,
                                  double scale) {
  const std::vector<double> p = ref_softmax(logits, E);
  RefChoice c;
  c.expert = ref_topk(p.data(), E, K);
  double sum = 0.0;
  for (int e : c.expert) sum += p[e];
  for (int e : c.expert) c.w.push_back(scale * p[e] / (norm_topk ? sum : 1.0));
  return c;
}

// The K largest logits, weights = scale * softmax over those K (noisy top-k in eval mode, where
// no noise is drawn; also top-k-then-softmax routing).
inline RefChoice ref_topk_then_softmax(const double* logits, int E, int K, double scale) {
  RefChoice c;
  c.expert = ref_topk(logits, E, K);
  std::vector<double> sel;
  for (int e : c.expert) sel.push_back(logits[e]);
  const std::vector<double> p = ref_softmax(sel.data(), K);
  for (double x : p) c.w.push_back(scale * x);
  return c;
}

// Expert choice (Zhou et al. 2022) as router.h defines it: scores = softmax over the experts of
// each token; each expert takes its C highest-scoring tokens (ties: lower token), weight =
// scale * score, with C = ceil(N*K/E * max(cf, 1)), capped at floor(N*K/E) and at N, at least 1.
// Returns the assignments of each token, as (expert, weight) pairs in expert order.
inline std::vector<std::vector<std::pair<int, double>>> ref_expert_choice(
    const std::vector<double>& logits, int N, int E, int K, double cf, double scale) {
  int C = static_cast<int>(std::ceil(static_cast<double>(N) * K / E * std::max(cf, 1.0)));
  C = std::max(1, std::min({C, N, N * K / E}));
  std::vector<double> s(static_cast<size_t>(N) * E);
  for (int t = 0; t < N; ++t) {
    const std::vector<double> p = ref_softmax(logits.data() + static_cast<size_t>(t) * E, E);
    std::copy(p.begin(), p.end(), s.begin() + static_cast<size_t>(t) * E);
  }
  std::vector<std::vector<std::pair<int, double>>> per_token(N);
  for (int e = 0; e < E; ++e) {
    std::vector<double> col(N);
    for (int t = 0; t < N; ++t) col[t] = s[static_cast<size_t>(t) * E + e];
    for (int t : ref_topk(col.data(), N, C)) per_token[t].push_back({e, scale * col[t]});
  }
  return per_token;
}

// A token's K highest-weight (expert, weight) pairs of a variable-length list, padded with
// (-1, 0) (ties: lower expert), as the inference layer reports expert-choice routing.
inline RefChoice ref_top_assignments(std::vector<std::pair<int, double>> mine, int K) {
  std::stable_sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  RefChoice c;
  for (int q = 0; q < K; ++q) {
    const bool has = q < static_cast<int>(mine.size());
    c.expert.push_back(has ? mine[q].first : -1);
    c.w.push_back(has ? mine[q].second : 0.0);
  }
  return c;
}

}  // namespace moe_test
