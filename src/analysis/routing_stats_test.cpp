// Routing statistics: hand-computed values, degenerate cases, and agreement of the capacity
// policy with the router's own apply_capacity.
#include "analysis/routing_stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "model/config.h"
#include "ops/router.h"

namespace moe {
namespace {

constexpr double kTol = 1e-12;

TopK make_topk(int N, int K, int E, std::vector<int32_t> expert, std::vector<float> weight = {}) {
  TopK t;
  t.n_tokens = N;
  t.k = K;
  t.n_experts = E;
  t.expert = std::move(expert);
  t.weight = std::move(weight);
  return t;
}

// ---- Load statistics ---------------------------------------------------------------------------

TEST(RoutingLoad, Uniform) {
  const LoadStats s = load_stats({5, 5, 5, 5});
  EXPECT_EQ(s.n_experts, 4);
  EXPECT_DOUBLE_EQ(s.total, 20);
  EXPECT_DOUBLE_EQ(s.mean, 5);
  EXPECT_NEAR(s.gini, 0.0, kTol);
  EXPECT_NEAR(s.entropy, std::log(4.0), kTol);
  EXPECT_NEAR(s.entropy_norm, 1.0, kTol);
  EXPECT_NEAR(s.cv, 0.0, kTol);
  EXPECT_NEAR(s.max_mean, 1.0, kTol);
  EXPECT_TRUE(s.hot.empty());
  EXPECT_TRUE(s.dead.empty());
}

TEST(RoutingLoad, HandComputed) {
  // Loads 1, 2, 3, 6: mean 3. Pair differences |1-2|+|1-3|+|1-6|+|2-3|+|2-6|+|3-6| = 16, over
  // ordered pairs 32, MAD = 32/16 = 2, Gini = 2 / (2*3) = 1/3. Deviations -2,-1,0,3: variance
  // 14/4, CV = sqrt(3.5)/3. Entropy of (1,2,3,6)/12 = 1.19884931... nats.
  const std::vector<double> load = {1, 2, 3, 6};
  const LoadStats s = load_stats(load);
  EXPECT_NEAR(s.gini, 1.0 / 3.0, kTol);
  EXPECT_NEAR(load_gini(load), 1.0 / 3.0, kTol);
  EXPECT_NEAR(s.entropy, 1.1988493129136213, 1e-12);
  EXPECT_NEAR(s.entropy_norm, 0.8647869792568114, 1e-12);
  EXPECT_NEAR(s.cv, 0.6236095644623235, 1e-12);
  EXPECT_NEAR(s.max_mean, 2.0, kTol);
  EXPECT_TRUE(s.hot.empty());                                     // 6 is not > 3 * 3
  EXPECT_EQ(load_hot_experts(load, 1.5), std::vector<int>({3}));  // 6 > 4.5
  EXPECT_EQ(load_hot_experts(load, 2.0), std::vector<int>());     // 6 is not > 6: strict
  // Scale invariance: fractions give the same statistics.
  const LoadStats f = load_stats({1.0 / 12, 2.0 / 12, 3.0 / 12, 6.0 / 12});
  EXPECT_NEAR(f.gini, s.gini, kTol);
  EXPECT_NEAR(f.cv, s.cv, kTol);
}

TEST(RoutingLoad, AllTokensToOneExpert) {
  // One-hot over E = 4: Gini (E-1)/E, entropy 0, CV sqrt(E-1), max/mean E.
  const LoadStats s = load_stats({0, 0, 8, 0});
  EXPECT_NEAR(s.gini, 0.75, kTol);
  EXPECT_NEAR(s.entropy, 0.0, kTol);
  EXPECT_NEAR(s.entropy_norm, 0.0, kTol);
  EXPECT_NEAR(s.cv, std::sqrt(3.0), kTol);
  EXPECT_NEAR(s.max_mean, 4.0, kTol);
  EXPECT_EQ(s.hot, std::vector<int>({2}));
  EXPECT_EQ(s.dead, std::vector<int>({0, 1, 3}));
  EXPECT_NEAR(load_gini({0, 0, 0, 0, 0, 0, 0, 3}), 7.0 / 8.0, kTol);
}

TEST(RoutingLoad, EmptyExpert) {
  // 2, 0, 2: sorted 0, 2, 2; ordered-pair differences sum 8, MAD 8/9, mean 4/3 -> Gini 1/3.
  const LoadStats s = load_stats({2, 0, 2});
  EXPECT_NEAR(s.gini, 1.0 / 3.0, kTol);
  EXPECT_NEAR(s.entropy, std::log(2.0), kTol);
  EXPECT_NEAR(s.entropy_norm, 0.6309297535714574, 1e-12);
  EXPECT_NEAR(s.cv, std::sqrt(2.0) / 2.0, kTol);  // deviations 2/3, -4/3, 2/3: var 8/9
  EXPECT_NEAR(s.max_mean, 1.5, kTol);
  EXPECT_EQ(s.dead, std::vector<int>({1}));
  EXPECT_TRUE(s.hot.empty());
}

TEST(RoutingLoad, SingleExpert) {
  const LoadStats s = load_stats({7});
  EXPECT_NEAR(s.gini, 0.0, kTol);
  EXPECT_NEAR(s.entropy, 0.0, kTol);
  EXPECT_NEAR(s.entropy_norm, 1.0, kTol);  // trivially balanced
  EXPECT_NEAR(s.cv, 0.0, kTol);
  EXPECT_NEAR(s.max_mean, 1.0, kTol);
  EXPECT_TRUE(s.hot.empty());
}

TEST(RoutingLoad, ZeroTokensAndNoExperts) {
  for (const std::vector<double>& load : {std::vector<double>{0, 0, 0}, std::vector<double>{}}) {
    const LoadStats s = load_stats(load);
    EXPECT_EQ(s.n_experts, static_cast<int>(load.size()));
    EXPECT_EQ(s.total, 0.0);
    EXPECT_EQ(s.gini, 0.0);
    EXPECT_EQ(s.entropy, 0.0);
    EXPECT_EQ(s.entropy_norm, 0.0);
    EXPECT_EQ(s.cv, 0.0);
    EXPECT_EQ(s.max_mean, 0.0);
    EXPECT_TRUE(s.hot.empty());
    EXPECT_TRUE(s.dead.empty());
  }
}

TEST(RoutingLoad, RejectsBadLoads) {
  EXPECT_THROW(load_stats({1, -1}), MoeError);
  EXPECT_THROW(load_stats({1, NAN}), MoeError);
  EXPECT_THROW(load_stats({1, INFINITY}), MoeError);
}

// ---- Capacity ----------------------------------------------------------------------------------

TEST(RoutingCapacity, HandComputed) {
  // N 4, K 2, E 4, cf 1: C = ceil(4*2/4 * 1) = 2. Expert 0 is chosen by every token with weights
  // .6 .7 .6 .5: it keeps t1 (.7) and t0 (.6, tie with t2 goes to the lower token); t2 and t3 drop.
  const TopK r = make_topk(4, 2, 4, {0, 1, 0, 2, 0, 1, 0, 3},
                           {0.6f, 0.4f, 0.7f, 0.3f, 0.6f, 0.4f, 0.5f, 0.5f});
  DropStats d = capacity_drops(r, 1.0);
  EXPECT_EQ(d.capacity, 2);
  EXPECT_EQ(d.assignments, 8);
  EXPECT_EQ(d.dropped, 2);
  EXPECT_DOUBLE_EQ(d.rate, 0.25);
  EXPECT_EQ(d.kept, std::vector<char>({1, 1, 1, 1, 0, 1, 0, 1}));
  EXPECT_EQ(d.dropped_per_expert, std::vector<int64_t>({2, 0, 0, 0}));
  // cf 0.5: C = 1. Expert 0 keeps t1; expert 1 (t0 .4, t2 .4) keeps t0.
  d = capacity_drops(r, 0.5);
  EXPECT_EQ(d.capacity, 1);
  EXPECT_EQ(d.dropped, 4);
  EXPECT_DOUBLE_EQ(d.rate, 0.5);
  EXPECT_EQ(d.kept, std::vector<char>({0, 1, 1, 1, 0, 0, 0, 1}));
  // cf <= 0: dropless.
  d = capacity_drops(r, 0.0);
  EXPECT_EQ(d.capacity, 0);
  EXPECT_EQ(d.dropped, 0);
  EXPECT_EQ(d.rate, 0.0);
}

TEST(RoutingCapacity, AllTokensToOneExpert) {
  // N 5, K 1, E 4: C = ceil(5/4) = 2; equal weights: tokens 0 and 1 stay.
  const TopK r = make_topk(5, 1, 4, {2, 2, 2, 2, 2}, {1, 1, 1, 1, 1});
  const DropStats d = capacity_drops(r, 1.0);
  EXPECT_EQ(d.capacity, 2);
  EXPECT_EQ(d.dropped, 3);
  EXPECT_DOUBLE_EQ(d.rate, 0.6);
  EXPECT_EQ(d.kept, std::vector<char>({1, 1, 0, 0, 0}));
  EXPECT_EQ(d.dropped_per_expert, std::vector<int64_t>({0, 0, 3, 0}));
}

TEST(RoutingCapacity, SingleExpertZeroTokensAndNaN) {
  // E 1, N 3, K 1: cf 1 -> C 3, nothing drops; cf .5 -> C = ceil(1.5) = 2, the lowest weight drops.
  const TopK one = make_topk(3, 1, 1, {0, 0, 0}, {0.9f, 0.2f, 0.5f});
  EXPECT_EQ(capacity_drops(one, 1.0).dropped, 0);
  const DropStats d = capacity_drops(one, 0.5);
  EXPECT_EQ(d.capacity, 2);
  EXPECT_EQ(d.kept, std::vector<char>({1, 0, 1}));
  // Zero tokens.
  const DropStats z = capacity_drops(make_topk(0, 2, 4, {}, {}), 1.25);
  EXPECT_EQ(z.assignments, 0);
  EXPECT_EQ(z.dropped, 0);
  EXPECT_EQ(z.rate, 0.0);
  // NaN weights rank last.
  const TopK nan = make_topk(3, 1, 2, {0, 0, 0}, {NAN, 0.1f, 0.2f});
  EXPECT_EQ(capacity_drops(nan, 1.0).kept, std::vector<char>({0, 1, 1}));  // C = ceil(1.5) = 2
  // Weights are required; bad expert ids are rejected.
  EXPECT_THROW(capacity_drops(make_topk(1, 1, 2, {0}), 1.0), MoeError);
  EXPECT_THROW(capacity_drops(make_topk(1, 1, 2, {2}, {1.0f}), 1.0), MoeError);
  EXPECT_EQ(capacity_for(7, 2, 4, 1.25), 5);  // ceil(3.5 * 1.25) = ceil(4.375)
}

TEST(RoutingCapacity, MatchesRouterApplyCapacity) {
  // The router's own dropping (router_forward with a capacity factor) keeps exactly the
  // assignments capacity_drops keeps, ties included (rows repeat to create equal weights).
  std::mt19937 g(7);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  for (int trial = 0; trial < 20; ++trial) {
    const int N = 16 + trial, E = 4 + trial % 5, K = 1 + trial % 3;
    const float cf = 0.5f + 0.25f * (trial % 4);
    std::vector<float> logits(static_cast<size_t>(N) * E);
    for (float& x : logits) x = nd(g);
    for (int t = 1; t < N; t += 3)  // repeated rows: equal weights for the same experts
      std::copy(logits.begin() + (t - 1) * E, logits.begin() + t * E, logits.begin() + t * E);
    RouterSpec spec;
    spec.norm_topk = trial % 2;
    Routing r;
    routing_init(&r, N, E, K);
    router_forward(&r, spec, logits.data(), nullptr, nullptr, nullptr, N, cf, 1, false);
    const TopK tk = topk_from_routing(r);
    const DropStats d = capacity_drops(tk, cf);
    EXPECT_EQ(d.capacity, r.capacity) << "trial " << trial;
    EXPECT_EQ(d.dropped, r.dropped) << "trial " << trial;
    for (int a = 0; a < r.A; ++a)
      ASSERT_EQ(d.kept[a], r.kept[a]) << "trial " << trial << " a " << a;
    const std::vector<double> load = topk_load(tk);
    for (int e = 0; e < E; ++e) EXPECT_EQ(load[e], r.sel_count[e]);
  }
}

// ---- Consistency -------------------------------------------------------------------------------

TEST(RoutingConsistency, HandComputed) {
  // t0 {0,1} vs {1,0}: 1; t1 {2,3} vs {2,4}: 1/3; t2 {0,1} vs {5,6}: 0. Mean 4/9.
  const TopK a = make_topk(3, 2, 8, {0, 1, 2, 3, 0, 1});
  const TopK b = make_topk(3, 2, 8, {1, 0, 2, 4, 5, 6});
  const Consistency c = routing_consistency(a, b);
  EXPECT_NEAR(c.mean_jaccard, 4.0 / 9.0, kTol);
  EXPECT_NEAR(c.jaccard[1], 1.0 / 3.0, kTol);
  EXPECT_NEAR(c.top1_agreement, 1.0 / 3.0, kTol);  // only t1's first choice agrees
  EXPECT_NEAR(routing_consistency(a, a).mean_jaccard, 1.0, kTol);
  // Different K: {0} vs {0, 1} = 1/2.
  EXPECT_NEAR(routing_consistency(make_topk(1, 1, 4, {0}), make_topk(1, 2, 4, {0, 1})).mean_jaccard,
              0.5, kTol);
  // Duplicate choices count once: {3,3} vs {3} = 1.
  EXPECT_NEAR(routing_consistency(make_topk(1, 2, 4, {3, 3}), make_topk(1, 1, 4, {3})).mean_jaccard,
              1.0, kTol);
}

TEST(RoutingConsistency, DegenerateCases) {
  // Zero tokens: 1 by convention. All tokens to one expert in both: 1. Single expert: 1.
  const Consistency z = routing_consistency(make_topk(0, 2, 4, {}), make_topk(0, 2, 4, {}));
  EXPECT_EQ(z.mean_jaccard, 1.0);
  EXPECT_TRUE(z.jaccard.empty());
  EXPECT_EQ(routing_consistency(make_topk(3, 1, 1, {0, 0, 0}), make_topk(3, 1, 1, {0, 0, 0}))
                .mean_jaccard,
            1.0);
  // Everything moved from expert 0 to expert 1: 0.
  const Consistency m =
      routing_consistency(make_topk(3, 1, 2, {0, 0, 0}), make_topk(3, 1, 2, {1, 1, 1}));
  EXPECT_EQ(m.mean_jaccard, 0.0);
  EXPECT_EQ(m.top1_agreement, 0.0);
  EXPECT_THROW(routing_consistency(make_topk(2, 1, 2, {0, 0}), make_topk(1, 1, 2, {0})), MoeError);
  EXPECT_THROW(routing_consistency(make_topk(2, 1, 2, {0}), make_topk(2, 1, 2, {0, 0})), MoeError);
}

// ---- Specialisation ----------------------------------------------------------------------------

Contingency table(int L, int E, std::vector<double> v) {
  Contingency c = contingency_make(L, E);
  c.count = std::move(v);
  return c;
}

TEST(RoutingSpecialisation, TwoByTwo) {
  // [[30, 10], [10, 50]]: n 100, row and column totals 40, 60. Expected 16, 24, 24, 36.
  // Lift = n_le n / (n_l n_e): 30*100/1600 = 1.875, 1000/2400, 1000/2400, 5000/3600.
  // Chi2 = 14^2 (1/16 + 2/24 + 1/36) = 34.02777..., V = sqrt(chi2/100) = 7/12.
  // Adjusted residual of cell (0,0) = 14 / sqrt(16 * .6 * .6) = 14 / 2.4; in a 2x2 table every
  // cell's squared adjusted residual equals chi2.
  const Specialisation s = specialisation(table(2, 2, {30, 10, 10, 50}));
  EXPECT_DOUBLE_EQ(s.total, 100);
  EXPECT_NEAR(s.lift[0], 1.875, kTol);
  EXPECT_NEAR(s.lift[1], 10.0 / 24.0, kTol);
  EXPECT_NEAR(s.lift[2], 10.0 / 24.0, kTol);
  EXPECT_NEAR(s.lift[3], 50.0 / 36.0, kTol);
  EXPECT_NEAR(s.chi2, 196.0 * (1.0 / 16 + 2.0 / 24 + 1.0 / 36), 1e-10);
  EXPECT_EQ(s.dof, 1);
  EXPECT_NEAR(s.cramers_v, 7.0 / 12.0, 1e-12);
  EXPECT_NEAR(s.residual[0], 14.0 / 2.4, 1e-12);
  EXPECT_NEAR(s.residual[1], -14.0 / 2.4, 1e-12);
  EXPECT_NEAR(s.residual[2], -14.0 / 2.4, 1e-12);
  EXPECT_NEAR(s.residual[3], 14.0 / 2.4, 1e-12);
  for (double r : s.residual) EXPECT_NEAR(r * r, s.chi2, 1e-9);
}

TEST(RoutingSpecialisation, PerfectAndIndependent) {
  // Each label to its own expert: lift n/n_l = 3 on the diagonal, V = 1, chi2 = n (q-1) = 60.
  const Specialisation p = specialisation(table(3, 3, {10, 0, 0, 0, 10, 0, 0, 0, 10}));
  EXPECT_NEAR(p.lift[0], 3.0, kTol);
  EXPECT_NEAR(p.lift[1], 0.0, kTol);
  EXPECT_NEAR(p.chi2, 60.0, 1e-10);
  EXPECT_EQ(p.dof, 4);
  EXPECT_NEAR(p.cramers_v, 1.0, 1e-12);
  // Proportional rows: independence, lift 1, residual 0, V 0.
  const Specialisation q = specialisation(table(2, 2, {10, 20, 20, 40}));
  for (double l : q.lift) EXPECT_NEAR(l, 1.0, kTol);
  for (double r : q.residual) EXPECT_NEAR(r, 0.0, 1e-12);
  EXPECT_NEAR(q.chi2, 0.0, 1e-12);
  EXPECT_NEAR(q.cramers_v, 0.0, 1e-6);
}

TEST(RoutingSpecialisation, DegenerateCases) {
  // An empty expert (column 1): lift undefined there, the rest is a single column: V 0, dof 0,
  // residuals 0 (zero variance).
  const Specialisation e = specialisation(table(2, 2, {5, 0, 5, 0}));
  EXPECT_NEAR(e.lift[0], 1.0, kTol);
  EXPECT_TRUE(std::isnan(e.lift[1]));
  EXPECT_TRUE(std::isnan(e.lift[3]));
  EXPECT_EQ(e.dof, 0);
  EXPECT_EQ(e.cramers_v, 0.0);
  for (double r : e.residual) EXPECT_EQ(r, 0.0);
  // A single expert: lift 1 for every seen label, nothing to test.
  const Specialisation one = specialisation(table(2, 1, {3, 7}));
  EXPECT_NEAR(one.lift[0], 1.0, kTol);
  EXPECT_NEAR(one.lift[1], 1.0, kTol);
  EXPECT_EQ(one.chi2, 0.0);
  EXPECT_EQ(one.cramers_v, 0.0);
  // All tokens to one expert (of three), two labels: the other columns are empty.
  const Specialisation all = specialisation(table(2, 3, {0, 4, 0, 0, 6, 0}));
  EXPECT_NEAR(all.lift[1], 1.0, kTol);
  EXPECT_NEAR(all.lift[4], 1.0, kTol);
  EXPECT_TRUE(std::isnan(all.lift[0]));
  EXPECT_EQ(all.cramers_v, 0.0);
  // Zero tokens: every lift undefined, statistics 0.
  const Specialisation z = specialisation(table(2, 2, {0, 0, 0, 0}));
  for (double l : z.lift) EXPECT_TRUE(std::isnan(l));
  EXPECT_EQ(z.chi2, 0.0);
  EXPECT_EQ(z.cramers_v, 0.0);
  // An unseen label (row 1) gets NaN lifts and no effect on the rest.
  const Specialisation u = specialisation(table(3, 2, {30, 10, 0, 0, 10, 50}));
  EXPECT_TRUE(std::isnan(u.lift[2]));
  EXPECT_NEAR(u.lift[0], 1.875, kTol);
  EXPECT_NEAR(u.cramers_v, 7.0 / 12.0, 1e-12);
  EXPECT_THROW(specialisation(table(2, 2, {1, 2, 3})), MoeError);
  EXPECT_THROW(specialisation(table(1, 2, {1, -2})), MoeError);
}

TEST(RoutingSpecialisation, TopLabelsPerExpert) {
  // [[30, 10], [10, 50], [3, 0]]: n 103, columns 43, 60. Label 2 has 3 tokens.
  const Specialisation s = specialisation(table(3, 2, {30, 10, 10, 50, 3, 0}));
  auto top = top_labels_per_expert(s, 5, 20.0);
  ASSERT_EQ(top.size(), 2u);
  ASSERT_EQ(top[0].size(), 2u);
  EXPECT_EQ(top[0][0].label, 0);
  EXPECT_NEAR(top[0][0].lift, 30.0 * 103 / (40 * 43), kTol);
  EXPECT_EQ(top[0][0].count, 30.0);
  EXPECT_EQ(top[0][1].label, 1);
  EXPECT_EQ(top[1][0].label, 1);
  EXPECT_NEAR(top[1][0].lift, 50.0 * 103 / (60 * 60), kTol);
  // Without a minimum, the rare label tops expert 0 (lift 103/43) and trails expert 1 (lift 0).
  top = top_labels_per_expert(s, 5, 0.0);
  EXPECT_EQ(top[0][0].label, 2);
  EXPECT_NEAR(top[0][0].lift, 103.0 / 43.0, kTol);
  EXPECT_EQ(top[1].back().label, 2);
  EXPECT_EQ(top[1].back().lift, 0.0);
  top = top_labels_per_expert(s, 1, 0.0);
  EXPECT_EQ(top[0].size(), 1u);
  // Ties go to the lower label.
  top = top_labels_per_expert(specialisation(table(2, 2, {10, 10, 10, 10})), 5, 0.0);
  EXPECT_EQ(top[0][0].label, 0);
  EXPECT_EQ(top[0][1].label, 1);
  // Zero tokens: nothing qualifies.
  top = top_labels_per_expert(specialisation(table(2, 2, {0, 0, 0, 0})), 5, 0.0);
  EXPECT_TRUE(top[0].empty());
}

TEST(RoutingSpecialisation, ContingencyFromRouting) {
  // t0 {0,1} label 0; t1 {1,2} label 1; t2 {0,2} label 255 (none, skipped).
  const TopK r = make_topk(3, 2, 3, {0, 1, 1, 2, 0, 2});
  Contingency c = contingency_make(2, 3);
  contingency_add(&c, r, {0, 1, 255});
  EXPECT_EQ(c.count, std::vector<double>({1, 1, 0, 0, 1, 1}));
  Contingency c1 = contingency_make(2, 3);
  contingency_add(&c1, r, {0, 1, -1}, true);
  EXPECT_EQ(c1.count, std::vector<double>({1, 0, 0, 0, 1, 0}));
  EXPECT_THROW(contingency_add(&c, r, {0, 1}), MoeError);
  Contingency c4 = contingency_make(2, 4);
  EXPECT_THROW(contingency_add(&c4, r, {0, 1, 0}), MoeError);
}

}  // namespace
}  // namespace moe
