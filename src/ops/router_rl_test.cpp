// The BASE, Sinkhorn and REINFORCE routers: REINFORCE's sampling distribution, and what each
// router selects in training and at inference (the score-function gradient is in the op harness,
// backend_test.cpp; every gradient against PyTorch in tests/router_fixture_test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ops/router.h"
#include "test_util.h"

namespace moe {
namespace {

using moe_test::randn;

// The first draw follows p; draws are distinct; inference takes the top K.
TEST(ReinforceRouter, SamplesFollowThePolicy) {
  const int E = 4, K = 2, n = 4000;
  RouterSpec spec;
  spec.kind = ROUTER_REINFORCE;
  Routing r;
  routing_init(&r, 1, E, K, spec.kind);
  const std::vector<float> lg = {1.0f, 0.0f, -1.0f, 0.5f};
  std::vector<int> first(E, 0);
  for (int s = 0; s < n; ++s) {
    router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, 1, 0.0f, s, true);
    ASSERT_NE(r.expert[0], r.expert[1]);
    ++first[r.expert[0]];
    EXPECT_FLOAT_EQ(r.w[0], r.score[r.expert[0]]);
  }
  for (int e = 0; e < E; ++e) {
    const double p = r.score[e];
    EXPECT_NEAR(first[e] / static_cast<double>(n), p, 4.0 * std::sqrt(p * (1 - p) / n)) << e;
  }
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, 1, 0.0f, 1, false);
  EXPECT_EQ(r.expert[0], 0);
  EXPECT_EQ(r.expert[1], 3);
}

// BASE: balanced in training whatever the scores prefer, greedy top-1 at inference; the weight is
// scale * sigmoid(logit).
TEST(BaseRouter, BalancedInTrainingGreedyAtInference) {
  const int N = 6, E = 3;
  RouterSpec spec;
  spec.kind = ROUTER_BASE;
  spec.scale = 2.0f;
  Routing r;
  routing_init(&r, N, E, 1, spec.kind);
  std::vector<float> lg = randn(N * E, 4);
  for (int t = 0; t < N; ++t) lg[t * E + 2] += 5.0f;  // everyone prefers expert 2
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, N, 0.0f, 0, true);
  EXPECT_EQ(r.sel_count, (std::vector<int32_t>{2, 2, 2}));
  EXPECT_GT(r.assign_work, 0);
  for (int t = 0; t < N; ++t)
    EXPECT_FLOAT_EQ(r.w[t], 2.0f / (1.0f + std::exp(-lg[t * E + r.expert[t]])));
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, N, 0.0f, 0, false);
  EXPECT_EQ(r.sel_count, (std::vector<int32_t>{0, 0, 6}));
}

// Sinkhorn: in training the balanced scores pick the experts (spreading a crowd that all prefers
// one expert), the weights stay the plain scores; at inference the plain scores pick.
TEST(SinkhornRouter, BalancesSelectionOnly) {
  const int N = 8, E = 4, K = 1;
  RouterSpec spec;
  spec.kind = ROUTER_SINKHORN;
  Routing r;
  routing_init(&r, N, E, K, spec.kind);
  std::vector<float> lg = randn(N * E, 6, 0.5f);
  for (int t = 0; t < N; ++t) lg[t * E + 0] += 2.0f;
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, N, 0.0f, 0, false);
  EXPECT_EQ(r.sel_count[0], N);
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, N, 0.0f, 0, true);
  EXPECT_LT(r.sel_count[0], N);
  EXPECT_GT(r.assign_work, 1);
  for (int t = 0; t < N; ++t)  // top-1: sigmoid of the selected logit
    EXPECT_FLOAT_EQ(r.w[t], 1.0f / (1.0f + std::exp(-lg[t * E + r.expert[t]])));
}

}  // namespace
}  // namespace moe
