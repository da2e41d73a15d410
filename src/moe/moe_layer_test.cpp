// Router variants on hand-computed cases, and the sparse MoE layer against a per-token reference.
#include "moe/moe_layer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ops/ops.h"
#include "ref_routing.h"

namespace moe {
namespace {

struct Routed {
  std::vector<int32_t> idx;
  std::vector<float> w;
};

Routed route(const RouterSpec& r, const std::vector<float>& logits, const std::vector<float>* bias,
             int E, int K) {
  int T = static_cast<int>(logits.size()) / E;
  Routed o;
  o.idx.resize(T * K);
  o.w.resize(T * K);
  Routing rt;
  routing_init(&rt, T, E, K);
  router_forward(&rt, r, logits.data(), bias ? bias->data() : nullptr, nullptr, nullptr, T, 0.0f, 0,
                 false);
  std::copy(rt.expert.begin(), rt.expert.begin() + T * K, o.idx.begin());
  std::copy(rt.w.begin(), rt.w.begin() + T * K, o.w.begin());
  return o;
}

TEST(Router, SoftmaxTopKWithAndWithoutRenorm) {
  RouterSpec r;
  std::vector<float> lg = {0.0f, 2.0f, 1.0f, -1.0f};
  double z = 1 + std::exp(2.0) + std::exp(1.0) + std::exp(-1.0);
  Routed a = route(r, lg, nullptr, 4, 2);
  EXPECT_EQ(a.idx, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(a.w[0], std::exp(2.0) / z, 1e-7);
  EXPECT_NEAR(a.w[1], std::exp(1.0) / z, 1e-7);
  r.norm_topk = true;
  Routed b = route(r, lg, nullptr, 4, 2);
  EXPECT_NEAR(b.w[0], std::exp(2.0) / (std::exp(2.0) + std::exp(1.0)), 1e-7);
  EXPECT_NEAR(b.w[0] + b.w[1], 1.0, 1e-7);
}

TEST(Router, TiesGoToLowerIndex) {
  RouterSpec r;
  Routed a = route(r, {0.5f, 1.0f, 1.0f, 1.0f}, nullptr, 4, 2);
  EXPECT_EQ(a.idx, (std::vector<int32_t>{1, 2}));
}

TEST(Router, TopKThenSoftmax) {
  RouterSpec r;
  r.topk_then_softmax = true;
  Routed a = route(r, {3.0f, -1.0f, 2.0f, 0.0f}, nullptr, 4, 2);
  EXPECT_EQ(a.idx, (std::vector<int32_t>{0, 2}));
  EXPECT_NEAR(a.w[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
  EXPECT_NEAR(a.w[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-7);
}

TEST(Router, GroupLimitedMaxKeepsBestGroups) {
  // 3 groups of 2. Group maxima: g0 = e1, g1 = e2 (highest single), g2 = e5.
  RouterSpec r;
  r.group = GROUP_MAX;
  r.n_group = 3;
  r.topk_group = 1;
  r.scale = 1.5f;
  std::vector<float> lg = {1.0f, 2.9f, 3.0f, -5.0f, 2.8f, 2.95f};
  Routed a = route(r, lg, nullptr, 6, 2);
  // only group 1 survives: experts 2 and 3
  EXPECT_EQ(a.idx, (std::vector<int32_t>{2, 3}));
  double z = 0;
  for (float v : lg) z += std::exp(static_cast<double>(v));
  EXPECT_NEAR(a.w[0], 1.5 * std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(a.w[1], 1.5 * std::exp(-5.0) / z, 1e-9);
}

TEST(Router, SigmoidBiasSelectsButDoesNotWeigh) {
  // DeepSeek-V3: selection on sigmoid + bias, top-2-sum group scores; weights from sigmoid alone.
  RouterSpec r;
  r.score = SCORE_SIGMOID;
  r.has_correction_bias = true;
  r.group = GROUP_TOP2_SUM;
  r.n_group = 2;
  r.topk_group = 1;
  r.norm_topk = true;
  r.norm_eps = 1e-20f;
  r.scale = 2.5f;
  std::vector<float> lg = {2.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f};
  std::vector<float> bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  auto sg = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  // groups {0,1,2} top2 sum = s(2)+s(0); {3,4,5} = 2 s(1): group 1 wins
  Routed a = route(r, lg, &bias, 6, 2);
  EXPECT_EQ(a.idx, (std::vector<int32_t>{3, 4}));
  EXPECT_NEAR(a.w[0], 1.25, 1e-6);
  // a bias on expert 1 moves group 0 ahead and picks expert 1 over 2, but weights stay sigmoid
  bias[1] = 0.5f;
  Routed b = route(r, lg, &bias, 6, 2);
  EXPECT_EQ(b.idx, (std::vector<int32_t>{1, 0}));
  double s0 = sg(2.0), s1 = sg(0.0);
  EXPECT_NEAR(b.w[0], 2.5 * s1 / (s0 + s1), 1e-6);
  EXPECT_NEAR(b.w[1], 2.5 * s0 / (s0 + s1), 1e-6);
}

// A tiny MoE layer with random weights.
struct TinyMoe {
  ModelConfig c;
  LayerWeights lw;
  std::vector<std::vector<float>> bufs;
  const float* buf(size_t n, std::mt19937& g) {
    std::normal_distribution<float> d(0.0f, 0.3f);
    bufs.emplace_back(n);
    for (float& x : bufs.back()) x = d(g);
    return bufs.back().data();
  }
  TinyMoe(ExpertAct act, int shared, bool shared_gate) {
    std::mt19937 g(42);
    c.hidden = 8;
    c.n_experts = 5;
    c.top_k = 2;
    c.expert_ffn = 6;
    c.act = act;
    c.expert_bias = act == ACT_SWIGLU_OAI;
    c.shared_ffn = shared;
    c.shared_gate = shared_gate;
    const int D = c.hidden, F = c.expert_ffn, E = c.n_experts;
    lw.router = {buf(E * D, g), nullptr, E, D};
    lw.experts.resize(E);
    for (auto& e : lw.experts) {
      e.gate = buf(F * D, g);
      e.up = buf(F * D, g);
      e.down = buf(D * F, g);
      if (c.expert_bias) {
        e.gate_b = buf(F, g);
        e.up_b = buf(F, g);
        e.down_b = buf(D, g);
      }
    }
    if (shared) {
      lw.shared.gate = {buf(shared * D, g), nullptr, shared, D};
      lw.shared.up = {buf(shared * D, g), nullptr, shared, D};
      lw.shared.down = {buf(D * shared, g), nullptr, D, shared};
      lw.shared_gate = {buf(D, g), nullptr, 1, D};
    }
  }
};

double ref_act(const ModelConfig& c, double g, double u) {
  if (c.act == ACT_SWIGLU) return g / (1 + std::exp(-g)) * u;
  g = std::min(g, 7.0);
  u = std::clamp(u, -7.0, 7.0);
  return (u + 1) * g / (1 + std::exp(-1.702 * g));
}

// y = sum over the token's K experts, computed one token at a time in double.
std::vector<double> ref_moe(const TinyMoe& m, const std::vector<float>& x, int T) {
  const ModelConfig& c = m.c;
  const int D = c.hidden, F = c.expert_ffn, E = c.n_experts, K = c.top_k;
  std::vector<double> out(T * D, 0.0);
  for (int t = 0; t < T; ++t) {
    const float* xt = x.data() + t * D;
    // Routing from its definition (softmax over E, the K most probable, optionally renormalised),
    // not from the router under test.
    EXPECT_TRUE(c.router.kind == ROUTER_TOKEN_CHOICE && c.router.score == SCORE_SOFTMAX &&
                !c.router.topk_then_softmax && c.router.group == GROUP_NONE &&
                !c.router.has_correction_bias)
        << "ref_moe only knows softmax top-k routing";
    std::vector<double> lg = moe_test::ref_router_logits(m.lw.router.w, xt, 1, E, D);
    if (m.lw.router.b)
      for (int e = 0; e < E; ++e) lg[e] += m.lw.router.b[e];
    const moe_test::RefChoice r =
        moe_test::ref_softmax_topk(lg.data(), E, K, c.router.norm_topk, c.router.scale);
    for (int k = 0; k < K; ++k) {
      const ExpertWeights& ew = m.lw.experts[r.expert[k]];
      std::vector<double> h(F);
      for (int f = 0; f < F; ++f) {
        double g = ew.gate_b ? ew.gate_b[f] : 0, u = ew.up_b ? ew.up_b[f] : 0;
        for (int i = 0; i < D; ++i) {
          g += static_cast<double>(ew.gate[f * D + i]) * xt[i];
          u += static_cast<double>(ew.up[f * D + i]) * xt[i];
        }
        h[f] = ref_act(c, g, u);
      }
      for (int i = 0; i < D; ++i) {
        double y = ew.down_b ? ew.down_b[i] : 0;
        for (int f = 0; f < F; ++f) y += ew.down[i * F + f] * h[f];
        out[t * D + i] += r.w[k] * y;
      }
    }
    if (c.shared_ffn) {
      const int S = c.shared_ffn;
      double gate = 1.0;
      if (c.shared_gate) {
        double s = 0;
        for (int i = 0; i < D; ++i) s += static_cast<double>(m.lw.shared_gate.w[i]) * xt[i];
        gate = 1 / (1 + std::exp(-s));
      }
      std::vector<double> h(S);
      for (int f = 0; f < S; ++f) {
        double g = 0, u = 0;
        for (int i = 0; i < D; ++i) {
          g += static_cast<double>(m.lw.shared.gate.w[f * D + i]) * xt[i];
          u += static_cast<double>(m.lw.shared.up.w[f * D + i]) * xt[i];
        }
        h[f] = g / (1 + std::exp(-g)) * u;
      }
      for (int i = 0; i < D; ++i) {
        double y = 0;
        for (int f = 0; f < S; ++f) y += m.lw.shared.down.w[i * S + f] * h[f];
        out[t * D + i] += gate * y;
      }
    }
  }
  return out;
}

// Returns the number of assignments each expert received.
std::vector<int> check_moe(const TinyMoe& m, int T) {
  std::mt19937 g(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(T * m.c.hidden), out(T * m.c.hidden, NAN);
  for (float& v : x) v = d(g);
  FfnScratch s;
  ffn_scratch_init(&s, m.c, T);
  moe_forward(out.data(), m.c, m.lw, x.data(), T, &s, nullptr, 0, 0);
  std::vector<double> ref = ref_moe(m, x, T);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-4) << i;
  // The (T, K) routing the layer reports is the reference routing of each token.
  const int E = m.c.n_experts, K = m.c.top_k, D = m.c.hidden;
  std::vector<double> lg = moe_test::ref_router_logits(m.lw.router.w, x.data(), T, E, D);
  if (m.lw.router.b)
    for (int i = 0; i < T * E; ++i) lg[i] += m.lw.router.b[i % E];
  for (int t = 0; t < T; ++t) {
    const moe_test::RefChoice r = moe_test::ref_softmax_topk(
        lg.data() + static_cast<size_t>(t) * E, E, K, m.c.router.norm_topk, m.c.router.scale);
    for (int k = 0; k < K; ++k) {
      EXPECT_EQ(s.idx[t * K + k], r.expert[k]) << "token " << t << " k " << k;
      EXPECT_NEAR(s.w[t * K + k], r.w[k], 1e-6) << "token " << t << " k " << k;
    }
  }
  // Each expert ran only on its own tokens: segment sizes add up to T*K.
  EXPECT_EQ(s.plan.off[m.c.n_experts], T * m.c.top_k);
  std::vector<int> per(m.c.n_experts);
  for (int e = 0; e < m.c.n_experts; ++e) per[e] = s.plan.off[e + 1] - s.plan.off[e];
  return per;
}

TEST(MoeLayer, SwiGluMatchesPerTokenReference) { check_moe(TinyMoe(ACT_SWIGLU, 0, false), 9); }
TEST(MoeLayer, ClampedSwiGluWithBiases) { check_moe(TinyMoe(ACT_SWIGLU_OAI, 0, false), 7); }
TEST(MoeLayer, GatedSharedExpert) { check_moe(TinyMoe(ACT_SWIGLU, 4, true), 6); }
TEST(MoeLayer, SingleToken) { check_moe(TinyMoe(ACT_SWIGLU, 3, false), 1); }

TEST(MoeLayer, AllTokensToOneExpert) {
  TinyMoe m(ACT_SWIGLU, 0, false);
  m.c.top_k = 1;
  // A router whose row 3 dominates for every input: huge weights on expert 3 along sign(x).
  std::vector<float> w(m.c.n_experts * m.c.hidden, 0.0f);
  m.lw.router.w = w.data();
  std::vector<float> bias(m.c.n_experts, 0.0f);
  bias[3] = 100.0f;
  m.lw.router.b = bias.data();
  EXPECT_EQ(check_moe(m, 5), (std::vector<int>{0, 0, 0, 5, 0}));
}

}  // namespace
}  // namespace moe
