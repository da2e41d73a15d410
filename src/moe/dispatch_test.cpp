// Capacity dropping and the dispatch plan against hand-made cases, and the local dispatcher's
// combine and backward against plain loops over the assignments.
#include "moe/dispatch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "ops/capacity.h"

namespace moe {
namespace {

TEST(Capacity, KeepsHighestWeightsTiesToLowerTokenNanLast) {
  // Expert 0 gets five assignments: weights 0.5 (tok 0), NaN (tok 1), 0.9 (tok 2), 0.5 (tok 3),
  // 0.2 (tok 4); expert 1 one. Capacity 3 keeps tokens 2, 0, 3.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<int32_t> tok = {0, 1, 2, 3, 4, 4};
  const std::vector<int32_t> ex = {0, 0, 0, 0, 0, 1};
  const std::vector<float> w = {0.5f, nan, 0.9f, 0.5f, 0.2f, 0.1f};
  std::vector<char> kept(6);
  std::vector<int64_t> per(2);
  std::vector<int32_t> work(6 + 2 * 2 + 1);
  EXPECT_EQ(capacity_apply(tok.data(), ex.data(), w.data(), 6, 2, 3, kept.data(), per.data(),
                           work.data()),
            2);
  EXPECT_EQ(kept, (std::vector<char>{1, 0, 1, 1, 0, 1}));
  EXPECT_EQ(per, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(capacity_apply(tok.data(), ex.data(), w.data(), 6, 2, 0, kept.data(), per.data(),
                           work.data()),
            0);  // dropless
  EXPECT_EQ(kept, (std::vector<char>(6, 1)));
  EXPECT_EQ(capacity_for(7, 2, 4, 1.25), 5);  // ceil(3.5 * 1.25)
  EXPECT_EQ(capacity_for(7, 2, 4, 0.0), 0);
}

Routing make_routing(int N, int E, int K, const std::vector<int32_t>& ex,
                     const std::vector<float>& w, const std::vector<char>& kept) {
  Routing r;
  routing_init(&r, N, E, K);
  r.N = N;
  r.A = N * K;
  for (int a = 0; a < r.A; ++a) {
    r.tok[a] = a / K;
    r.expert[a] = ex[a];
    r.w[a] = w[a];
    r.kept[a] = kept[a];
  }
  return r;
}

TEST(DispatchPlan, SegmentsAreStableAndSkipDropped) {
  // 4 tokens, K = 2, 3 experts; assignment 3 (token 1 -> expert 0) dropped.
  const Routing r = make_routing(4, 3, 2, {0, 2, 1, 0, 0, 1, 2, 0}, std::vector<float>(8, 0.5f),
                                 {1, 1, 1, 0, 1, 1, 1, 1});
  DispatchPlan p;
  dispatch_plan_init(&p, 4, 3, 8);
  dispatch_plan_build(&p, r);
  EXPECT_EQ(p.rows, 7);
  EXPECT_EQ(p.off, (std::vector<int32_t>{0, 3, 5, 7}));
  EXPECT_EQ(std::vector<int32_t>(p.row_asg.begin(), p.row_asg.begin() + 7),
            (std::vector<int32_t>{0, 4, 7, 2, 5, 1, 6}));
  EXPECT_EQ(std::vector<int32_t>(p.row_tok.begin(), p.row_tok.begin() + 7),
            (std::vector<int32_t>{0, 2, 3, 1, 2, 0, 3}));
  EXPECT_EQ(p.asg_row[3], -1);
  EXPECT_EQ(std::vector<int32_t>(p.tok_off.begin(), p.tok_off.begin() + 5),
            (std::vector<int32_t>{0, 2, 4, 6, 8}));
}

TEST(LocalDispatcher, CombineAndBackwardMatchAssignmentLoops) {
  const int N = 5, E = 4, K = 2, D = 3;
  std::mt19937 gen(2);
  std::uniform_int_distribution<int> pick(0, E - 1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<int32_t> ex(N * K);
  std::vector<float> w(N * K);
  std::vector<char> kept(N * K, 1);
  for (int t = 0; t < N; ++t) {
    ex[t * K] = pick(gen);
    ex[t * K + 1] = (ex[t * K] + 1 + pick(gen) % (E - 1)) % E;
    w[t * K] = nd(gen), w[t * K + 1] = nd(gen);
  }
  kept[3] = kept[6] = 0;
  const Routing r = make_routing(N, E, K, ex, w, kept);
  DispatchPlan p;
  dispatch_plan_init(&p, N, E, N * K);
  dispatch_plan_build(&p, r);
  Dispatcher& d = local_dispatcher();
  std::vector<float> x(N * D), xs(N * K * D), ys(N * K * D), out(N * D), dout(N * D);
  for (float& v : x) v = nd(gen);
  for (float& v : dout) v = nd(gen);
  const ExpertSegments seg = d.dispatch(p, x.data(), D, xs.data());
  EXPECT_EQ(seg.e0, 0);
  EXPECT_EQ(seg.n, E);
  // Each row holds its token's input; "expert outputs" ys = row index + input.
  for (int row = 0; row < p.rows; ++row)
    for (int i = 0; i < D; ++i) {
      EXPECT_EQ(xs[row * D + i], x[p.row_tok[row] * D + i]);
      ys[row * D + i] = xs[row * D + i] + 0.25f * row;
    }
  d.combine(p, w.data(), ys.data(), D, out.data());
  std::vector<float> dys(N * K * D), dw(N * K), dx(N * D);
  d.combine_backward(p, w.data(), ys.data(), dout.data(), D, dys.data(), dw.data());
  d.dispatch_backward(p, dys.data(), D, dx.data());
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < D; ++i) {
      double o = 0.0, g = 0.0;
      for (int a = t * K; a < (t + 1) * K; ++a) {
        if (!kept[a]) continue;
        o += static_cast<double>(w[a]) * ys[p.asg_row[a] * D + i];
        g += static_cast<double>(w[a]) * dout[t * D + i];
      }
      EXPECT_NEAR(out[t * D + i], o, 1e-6);
      EXPECT_NEAR(dx[t * D + i], g, 1e-6);
    }
  for (int a = 0; a < N * K; ++a) {
    double s = 0.0;
    if (kept[a])
      for (int i = 0; i < D; ++i) s += static_cast<double>(dout[a / K * D + i]) * ys[p.asg_row[a] * D + i];
    EXPECT_NEAR(dw[a], s, 1e-6);
  }
}

}  // namespace
}  // namespace moe
