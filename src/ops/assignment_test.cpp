// Balanced assignment (BASE) against brute force, and Sinkhorn scaling against its definition.
#include "ops/assignment.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "test_util.h"

namespace moe {
namespace {

// The best total over every assignment with expert e taking balanced_capacity(N, E, e) tokens,
// by exhaustive search (N <= 9).
double brute_best(const std::vector<float>& s, int N, int E) {
  std::vector<int> left(E);
  for (int e = 0; e < E; ++e) left[e] = balanced_capacity(N, E, e);
  double best = -INFINITY;
  std::function<void(int, double)> go = [&](int t, double acc) {
    if (t == N) {
      best = std::max(best, acc);
      return;
    }
    for (int e = 0; e < E; ++e) {
      if (!left[e]) continue;
      --left[e];
      go(t + 1, acc + s[t * E + e]);
      ++left[e];
    }
  };
  go(0, 0.0);
  return best;
}

double total_of(const std::vector<float>& s, const std::vector<int32_t>& ex, int E) {
  double acc = 0.0;
  for (size_t t = 0; t < ex.size(); ++t) acc += s[t * E + ex[t]];
  return acc;
}

void expect_balanced(const std::vector<int32_t>& ex, int N, int E) {
  std::vector<int> load(E, 0);
  for (int32_t e : ex) {
    ASSERT_TRUE(e >= 0 && e < E);
    ++load[e];
  }
  for (int e = 0; e < E; ++e) EXPECT_EQ(load[e], balanced_capacity(N, E, e)) << "expert " << e;
}

TEST(BalancedAssignment, OptimalAgainstBruteForceAndExactlyBalanced) {
  std::mt19937 gen(3);
  int cases = 0;
  for (int N : {2, 4, 5, 6, 7, 8, 9}) {
    for (int E : {1, 2, 3, 4}) {
      for (int rep = 0; rep < 4; ++rep, ++cases) {
        std::vector<float> s(N * E);
        // Integer scores (many ties) on even cases: the optimum must be met exactly; real-valued
        // ones on odd cases: within the quantisation bound N * range / 2^21.
        const bool integer = rep % 2 == 0;
        std::normal_distribution<float> nd(0.0f, 2.0f);
        std::uniform_int_distribution<int> ud(-3, 3);
        for (float& v : s) v = integer ? static_cast<float>(ud(gen)) : nd(gen);
        AssignWork w;
        assign_work_init(&w, N, E);
        std::vector<int32_t> ex(N, -1);
        balanced_assignment(s.data(), N, E, ex.data(), &w);
        expect_balanced(ex, N, E);
        const double best = brute_best(s, N, E);
        if (integer) EXPECT_EQ(total_of(s, ex, E), best) << "N " << N << " E " << E;
        else EXPECT_NEAR(total_of(s, ex, E), best, 1e-4) << "N " << N << " E " << E;
      }
    }
  }
  EXPECT_EQ(cases, 7 * 4 * 4);
}

// Every token prefers expert 0: the assignment must still be balanced, and it must send to expert
// 0 the tokens with the largest margin for it.
TEST(BalancedAssignment, ContendedExpertTakesTheLargestMargins) {
  const int N = 6, E = 3;
  std::vector<float> s = {5, 0, 0,  9, 0, 0,  1, 0, 0,  7, 0, 0,  2, 0, 0,  3, 0, 0};
  AssignWork w;
  assign_work_init(&w, N, E);
  std::vector<int32_t> ex(N);
  balanced_assignment(s.data(), N, E, ex.data(), &w);
  expect_balanced(ex, N, E);
  EXPECT_EQ(ex[1], 0);  // margins 9 and 7
  EXPECT_EQ(ex[3], 0);
}

// A training batch's size: exactly balanced, at least as good as any greedy fill, and fast.
TEST(BalancedAssignment, TrainingBatchSizeIsBalancedAndQuick) {
  const int N = 2048, E = 8;
  std::vector<float> s = moe_test::randn(N * E, 9);
  for (int t = 0; t < N; ++t) s[t * E + 1] += 1.5f;  // expert 1 is everyone's favourite
  AssignWork w;
  assign_work_init(&w, N, E);
  std::vector<int32_t> ex(N);
  const double sec = moe_test::thread_cpu_seconds(
      [&] { balanced_assignment(s.data(), N, E, ex.data(), &w); });
  expect_balanced(ex, N, E);
  // Greedy: tokens in order take their best expert with room left.
  std::vector<int> left(E, N / E);
  std::vector<int32_t> greedy(N);
  for (int t = 0; t < N; ++t) {
    int b = -1;
    for (int e = 0; e < E; ++e)
      if (left[e] && (b < 0 || s[t * E + e] > s[t * E + b])) b = e;
    greedy[t] = b;
    --left[b];
  }
  EXPECT_GE(total_of(s, ex, E), total_of(s, greedy, E));
  EXPECT_LT(sec, moe_test::kOneSecondBound) << w.bids << " bids";
}

TEST(Sinkhorn, ScalingBalancesRowsAndColumns) {
  const int N = 12, E = 4;
  const std::vector<float> s = moe_test::randn(N * E, 2, 1.5f);
  AssignWork w;
  assign_work_init(&w, N, E);
  std::vector<float> ld1(E);
  const int it = sinkhorn_scaling(s.data(), N, E, ld1.data(), &w, 1e-9, 2000);  // capped
  EXPECT_GE(it, 2);
  EXPECT_EQ(w.iters, it);
  // Balanced matrix P = diag(d0) exp(s) diag(d1): rows sum to 1/N, columns to 1/E.
  std::vector<double> col(E, 0.0);
  for (int t = 0; t < N; ++t) {
    double row = 0.0;
    for (int e = 0; e < E; ++e) {
      const double p = w.d0[t] * std::exp(static_cast<double>(s[t * E + e])) * w.d1[e];
      row += p;
      col[e] += p;
    }
    EXPECT_NEAR(row, 1.0 / N, 1e-6);
  }
  for (int e = 0; e < E; ++e) {
    EXPECT_NEAR(col[e], 1.0 / E, 1e-6);
    EXPECT_NEAR(ld1[e], std::log(w.d1[e]), 1e-5);
  }
}

}  // namespace
}  // namespace moe
