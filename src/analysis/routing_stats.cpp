#include "analysis/routing_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "ops/router.h"

namespace moe {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double sum_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0);
}

void check_load(const std::vector<double>& load) {
  for (size_t e = 0; e < load.size(); ++e)
    if (!std::isfinite(load[e]) || load[e] < 0)
      fail("load of expert %zu is %g: loads must be finite and >= 0", e, load[e]);
}

}  // namespace

// ---- Load balance ------------------------------------------------------------------------------

double load_gini(const std::vector<double>& load) {
  const size_t E = load.size();
  const double total = sum_of(load);
  if (E == 0 || total <= 0) return 0.0;
  // sum_i sum_j |x_i - x_j| = 2 sum_k (2k - E + 1) x_(k) over the ascending order x_(0..E-1).
  std::vector<double> s = load;
  std::sort(s.begin(), s.end());
  double acc = 0.0;
  for (size_t k = 0; k < E; ++k) acc += (2.0 * static_cast<double>(k) - (E - 1.0)) * s[k];
  // G = MAD / (2 mean) = (2 acc / E^2) / (2 total / E) = acc / (E total).
  return std::max(0.0, acc / (static_cast<double>(E) * total));
}

double load_entropy(const std::vector<double>& load) {
  const double total = sum_of(load);
  if (total <= 0) return 0.0;
  double h = 0.0;
  for (double v : load)
    if (v > 0) h -= v / total * std::log(v / total);
  return std::max(0.0, h);
}

double load_cv(const std::vector<double>& load) {
  const size_t E = load.size();
  const double total = sum_of(load);
  if (E == 0 || total <= 0) return 0.0;
  const double mean = total / static_cast<double>(E);
  double var = 0.0;
  for (double v : load) var += (v - mean) * (v - mean);
  return std::sqrt(var / static_cast<double>(E)) / mean;
}

double load_max_mean(const std::vector<double>& load) {
  const size_t E = load.size();
  const double total = sum_of(load);
  if (E == 0 || total <= 0) return 0.0;
  return *std::max_element(load.begin(), load.end()) / (total / static_cast<double>(E));
}

std::vector<int> load_hot_experts(const std::vector<double>& load, double threshold) {
  std::vector<int> hot;
  const double total = sum_of(load);
  if (load.empty() || total <= 0) return hot;
  const double mean = total / static_cast<double>(load.size());
  for (size_t e = 0; e < load.size(); ++e)
    if (load[e] > threshold * mean) hot.push_back(static_cast<int>(e));
  return hot;
}

LoadStats load_stats(const std::vector<double>& load, double threshold) {
  check_load(load);
  LoadStats s;
  s.n_experts = static_cast<int>(load.size());
  s.total = sum_of(load);
  if (s.n_experts == 0 || s.total <= 0) return s;
  s.mean = s.total / s.n_experts;
  s.gini = load_gini(load);
  s.entropy = load_entropy(load);
  s.entropy_norm = s.n_experts > 1 ? s.entropy / std::log(static_cast<double>(s.n_experts)) : 1.0;
  s.cv = load_cv(load);
  s.max_mean = load_max_mean(load);
  s.hot = load_hot_experts(load, threshold);
  for (int e = 0; e < s.n_experts; ++e)
    if (load[e] == 0) s.dead.push_back(e);
  return s;
}

// ---- Per-token top-k choices -------------------------------------------------------------------

void topk_validate(const TopK& r, const char* what) {
  if (r.n_tokens < 0 || r.k < 0 || r.n_experts < 0)
    fail("%s: negative size (N %d, K %d, E %d)", what, r.n_tokens, r.k, r.n_experts);
  const size_t a = static_cast<size_t>(r.n_tokens) * r.k;
  if (r.expert.size() != a)
    fail("%s: %zu expert choices for N %d x K %d", what, r.expert.size(), r.n_tokens, r.k);
  if (!r.weight.empty() && r.weight.size() != a)
    fail("%s: %zu weights for N %d x K %d", what, r.weight.size(), r.n_tokens, r.k);
  for (size_t i = 0; i < a; ++i)
    if (r.expert[i] < 0 || r.expert[i] >= r.n_experts)
      fail("%s: token %zu chose expert %d, outside [0, %d)", what, i / r.k, r.expert[i],
           r.n_experts);
}

TopK topk_from_routing(const Routing& r) {
  if (r.A != r.N * r.K) fail("expert-choice routing has no fixed per-token top-k");
  TopK t;
  t.n_tokens = r.N;
  t.k = r.K;
  t.n_experts = r.E;
  t.expert.resize(r.A);
  t.weight.resize(r.A);
  for (int a = 0; a < r.A; ++a) {
    if (r.tok[a] != a / r.K) fail("expert-choice routing has no fixed per-token top-k");
    t.expert[a] = r.expert[a];
    t.weight[a] = r.w[a];
  }
  return t;
}

std::vector<double> topk_load(const TopK& r) {
  topk_validate(r, "top-k routing");
  std::vector<double> load(r.n_experts, 0.0);
  for (int32_t e : r.expert) load[e] += 1.0;
  return load;
}

DropStats capacity_drops(const TopK& r, double capacity_factor) {
  topk_validate(r, "top-k routing");
  const int64_t A = static_cast<int64_t>(r.n_tokens) * r.k;
  if (r.weight.size() != static_cast<size_t>(A)) fail("capacity drops need the routing weights");
  DropStats d;
  d.assignments = A;
  d.kept.assign(A, 1);
  d.dropped_per_expert.assign(r.n_experts, 0);
  const int64_t cap = capacity_for(r.n_tokens, r.k, r.n_experts, capacity_factor);
  if (cap > std::numeric_limits<int>::max()) fail("capacity %lld is out of range", (long long)cap);
  d.capacity = static_cast<int>(cap);
  if (cap <= 0 || A == 0) return d;
  std::vector<int32_t> tok(A), work(A + 2 * r.n_experts + 1);
  for (int64_t a = 0; a < A; ++a) tok[a] = static_cast<int32_t>(a / r.k);
  d.dropped = capacity_apply(tok.data(), r.expert.data(), r.weight.data(), A, r.n_experts, cap,
                             d.kept.data(), d.dropped_per_expert.data(), work.data());
  d.rate = static_cast<double>(d.dropped) / static_cast<double>(A);
  return d;
}

Consistency routing_consistency(const TopK& a, const TopK& b) {
  topk_validate(a, "first routing");
  topk_validate(b, "second routing");
  if (a.n_tokens != b.n_tokens)
    fail("routing consistency: the routings cover %d and %d tokens", a.n_tokens, b.n_tokens);
  Consistency c;
  const int N = a.n_tokens;
  c.jaccard.assign(N, 1.0);
  if (N == 0) return c;
  double sum = 0.0;
  int64_t agree = 0;
  std::vector<int32_t> sa, sb, inter;
  for (int t = 0; t < N; ++t) {
    sa.assign(a.expert.begin() + static_cast<int64_t>(t) * a.k,
              a.expert.begin() + static_cast<int64_t>(t + 1) * a.k);
    sb.assign(b.expert.begin() + static_cast<int64_t>(t) * b.k,
              b.expert.begin() + static_cast<int64_t>(t + 1) * b.k);
    if (!sa.empty() && !sb.empty() && sa[0] == sb[0]) ++agree;
    if (sa.empty() && sb.empty()) ++agree;
    std::sort(sa.begin(), sa.end());
    sa.erase(std::unique(sa.begin(), sa.end()), sa.end());
    std::sort(sb.begin(), sb.end());
    sb.erase(std::unique(sb.begin(), sb.end()), sb.end());
    inter.clear();
    std::set_intersection(sa.begin(), sa.end(), sb.begin(), sb.end(), std::back_inserter(inter));
    const size_t uni = sa.size() + sb.size() - inter.size();
    const double j = uni ? static_cast<double>(inter.size()) / static_cast<double>(uni) : 1.0;
    c.jaccard[t] = j;
    sum += j;
  }
  c.mean_jaccard = sum / N;
  c.top1_agreement = static_cast<double>(agree) / N;
  return c;
}

// ---- Specialisation ----------------------------------------------------------------------------

Contingency contingency_make(int n_labels, int n_experts) {
  MOE_CHECK(n_labels >= 0 && n_experts >= 0);
  Contingency c;
  c.n_labels = n_labels;
  c.n_experts = n_experts;
  c.count.assign(static_cast<size_t>(n_labels) * n_experts, 0.0);
  return c;
}

void contingency_add(Contingency* c, const TopK& r, const std::vector<int32_t>& labels,
                     bool top1_only) {
  topk_validate(r, "top-k routing");
  if (r.n_experts != c->n_experts)
    fail("contingency table has %d experts, the routing %d", c->n_experts, r.n_experts);
  if (labels.size() != static_cast<size_t>(r.n_tokens))
    fail("%zu labels for %d tokens", labels.size(), r.n_tokens);
  const int kk = top1_only ? std::min(r.k, 1) : r.k;
  for (int t = 0; t < r.n_tokens; ++t) {
    const int32_t l = labels[t];
    if (l < 0 || l >= c->n_labels) continue;
    for (int k = 0; k < kk; ++k)
      c->count[static_cast<size_t>(l) * c->n_experts +
               r.expert[static_cast<int64_t>(t) * r.k + k]] += 1.0;
  }
}

Specialisation specialisation(const Contingency& c) {
  const int L = c.n_labels, E = c.n_experts;
  if (c.count.size() != static_cast<size_t>(L) * E)
    fail("contingency table holds %zu counts for %d labels x %d experts", c.count.size(), L, E);
  for (double v : c.count)
    if (!std::isfinite(v) || v < 0) fail("contingency count %g: counts must be finite and >= 0", v);
  Specialisation s;
  s.n_labels = L;
  s.n_experts = E;
  s.label_total.assign(L, 0.0);
  s.expert_total.assign(E, 0.0);
  s.count = c.count;
  s.lift.assign(static_cast<size_t>(L) * E, kNaN);
  s.residual.assign(static_cast<size_t>(L) * E, 0.0);
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < E; ++e) {
      const double v = c.count[static_cast<size_t>(l) * E + e];
      s.label_total[l] += v;
      s.expert_total[e] += v;
      s.total += v;
    }
  const double n = s.total;
  if (n <= 0) return s;
  int rows = 0, cols = 0;
  for (double v : s.label_total) rows += v > 0;
  for (double v : s.expert_total) cols += v > 0;
  for (int l = 0; l < L; ++l) {
    const double nl = s.label_total[l];
    if (nl <= 0) continue;
    for (int e = 0; e < E; ++e) {
      const double ne = s.expert_total[e];
      if (ne <= 0) continue;
      const size_t i = static_cast<size_t>(l) * E + e;
      const double o = c.count[i];
      const double m = nl * ne / n;
      s.lift[i] = o * n / (nl * ne);
      s.chi2 += (o - m) * (o - m) / m;
      const double var = m * (1.0 - nl / n) * (1.0 - ne / n);
      s.residual[i] = var > 1e-12 * m ? (o - m) / std::sqrt(var) : 0.0;
    }
  }
  s.dof = static_cast<int64_t>(std::max(rows - 1, 0)) * std::max(cols - 1, 0);
  const int q = std::min(rows, cols);
  s.cramers_v = q > 1 ? std::sqrt(std::max(0.0, s.chi2) / (n * (q - 1))) : 0.0;
  s.cramers_v = std::min(s.cramers_v, 1.0);
  return s;
}

std::vector<std::vector<LabelLift>> top_labels_per_expert(const Specialisation& s, int top_n,
                                                          double min_count) {
  const int L = s.n_labels, E = s.n_experts;
  std::vector<std::vector<LabelLift>> out(E);
  for (int e = 0; e < E; ++e) {
    std::vector<LabelLift>& v = out[e];
    for (int l = 0; l < L; ++l) {
      const size_t i = static_cast<size_t>(l) * E + e;
      if (s.label_total[l] < min_count || std::isnan(s.lift[i])) continue;
      LabelLift x;
      x.label = l;
      x.lift = s.lift[i];
      x.residual = s.residual[i];
      x.count = s.count[i];
      v.push_back(x);
    }
    std::stable_sort(v.begin(), v.end(),
                     [](const LabelLift& a, const LabelLift& b) { return a.lift > b.lift; });
    if (static_cast<int>(v.size()) > std::max(top_n, 0)) v.resize(std::max(top_n, 0));
  }
  return out;
}

}  // namespace moe
