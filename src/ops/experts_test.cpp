// The expert activations against a double-precision definition, their gradients against finite
// differences of it, and the grouped expert FFN against a per-token double-precision reference.
#include "ops/experts.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace moe {
namespace {

double silu_d(double x) { return x / (1.0 + std::exp(-x)); }
double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The activation from its definition (hf_moe_architectures: gpt-oss clamps gate above and up on
// both sides, then (up + 1) * gate * sigmoid(alpha * gate)).
double act_ref(const ExpertFfnSpec& c, double g, double u) {
  if (c.act == ACT_SWIGLU) return silu_d(g) * u;
  const double gl = std::min(g, static_cast<double>(c.limit));
  const double ul = std::max(-static_cast<double>(c.limit),
                             std::min(u, static_cast<double>(c.limit)));
  return (ul + 1.0) * gl * sigmoid_d(c.alpha * gl);
}

TEST(ExpertAct, ForwardAndBackwardMatchDoubleReference) {
  for (ExpertAct kind : {ACT_SWIGLU, ACT_SWIGLU_OAI}) {
    ExpertFfnSpec c;
    c.act = kind;
    c.limit = 1.5f;
    std::mt19937 gen(1);
    std::normal_distribution<float> nd(0.0f, 1.5f);
    const int n = 400;
    std::vector<float> g(n), u(n), h(n), dh(n), dg(n), du(n);
    for (int i = 0; i < n; ++i) g[i] = nd(gen), u[i] = nd(gen), dh[i] = nd(gen);
    expert_act_forward(c, h.data(), g.data(), u.data(), n);
    expert_act_backward(c, dg.data(), du.data(), dh.data(), g.data(), u.data(), n);
    int clamped = 0;
    const double e = 1e-6;
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(h[i], act_ref(c, g[i], u[i]), 1e-5 * (1 + std::fabs(h[i]))) << i;
      // Central differences of the double definition, away from the clamps' kinks.
      if (kind == ACT_SWIGLU_OAI) {
        clamped += g[i] > c.limit || std::fabs(u[i]) > c.limit;
        if (std::fabs(g[i] - c.limit) < 1e-3 || std::fabs(std::fabs(u[i]) - c.limit) < 1e-3)
          continue;
      }
      const double fg = (act_ref(c, g[i] + e, u[i]) - act_ref(c, g[i] - e, u[i])) / (2 * e);
      const double fu = (act_ref(c, g[i], u[i] + e) - act_ref(c, g[i], u[i] - e)) / (2 * e);
      EXPECT_NEAR(dg[i], dh[i] * fg, 1e-4 * (1 + std::fabs(dh[i] * fg))) << i;
      EXPECT_NEAR(du[i], dh[i] * fu, 1e-4 * (1 + std::fabs(dh[i] * fu))) << i;
    }
    if (kind == ACT_SWIGLU_OAI) EXPECT_GT(clamped, 20);
  }
}

// experts_forward over ragged segments (empty, one row, several) with biases, against each row's
// FFN computed in double; the saved forward's activation buffer too.
TEST(Experts, ForwardMatchesPerRowReference) {
  for (bool save : {false, true}) {
    ExpertFfnSpec c;
    c.hidden = 8;
    c.ffn = 6;
    c.act = ACT_SWIGLU_OAI;
    c.limit = 2.0f;
    const int D = c.hidden, F = c.ffn, E = 4;
    std::mt19937 gen(4);
    std::normal_distribution<float> nd(0.0f, 0.7f);
    auto rnd = [&](int n) {
      std::vector<float> v(n);
      for (float& x : v) x = nd(gen);
      return v;
    };
    std::vector<std::vector<float>> wg, wu, wd, bg, bu, bd;
    std::vector<ExpertWeights> experts(E);
    for (int e = 0; e < E; ++e) {
      wg.push_back(rnd(F * D)), wu.push_back(rnd(F * D)), wd.push_back(rnd(D * F));
      bg.push_back(rnd(F)), bu.push_back(rnd(F)), bd.push_back(rnd(D));
    }
    for (int e = 0; e < E; ++e)
      experts[e] = {wg[e].data(), wu[e].data(), wd[e].data(), bg[e].data(), bu[e].data(),
                       bd[e].data()};
    const std::vector<int32_t> off = {0, 3, 3, 4, 9};  // expert 1 empty, expert 2 one row
    const int R = off[E];
    ExpertBuffers b;
    expert_buffers_init(&b, c, E, R, save);
    const std::vector<float> xs = rnd(R * D);
    std::copy(xs.begin(), xs.end(), b.xs.begin());
    experts_forward(&b, c, experts.data(), ExpertSegments{0, E, off.data()}, save);
    for (int e = 0; e < E; ++e)
      for (int r = off[e]; r < off[e + 1]; ++r) {
        std::vector<double> h(F);
        for (int f = 0; f < F; ++f) {
          double gv = bg[e][f], uv = bu[e][f];
          for (int i = 0; i < D; ++i) {
            gv += static_cast<double>(wg[e][f * D + i]) * xs[r * D + i];
            uv += static_cast<double>(wu[e][f * D + i]) * xs[r * D + i];
          }
          h[f] = act_ref(c, gv, uv);
          if (save) EXPECT_NEAR(b.act[r * F + f], h[f], 1e-5 * (1 + std::fabs(h[f])));
        }
        for (int i = 0; i < D; ++i) {
          double y = bd[e][i];
          for (int f = 0; f < F; ++f) y += static_cast<double>(wd[e][i * F + f]) * h[f];
          EXPECT_NEAR(b.ys[r * D + i], y, 1e-5 * (1 + std::fabs(y))) << "e=" << e << " r=" << r;
        }
      }
  }
}

}  // namespace
}  // namespace moe
