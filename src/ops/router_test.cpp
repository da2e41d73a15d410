// Trainable routers: gradient checks of every variant and loss, and hand-computed loss values.
#include "ops/router.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include "test_util.h"

namespace moe {
namespace {

using moe_test::randn;

struct Coefs {
  float aux = 0, z = 0, seq = 0, dev = 0;
  int seq_len = 0, n_dev = 0;
};

struct Case {
  RouterSpec spec;
  int N = 6, E = 8, K = 2;
  float cf = 0.0f;
  Coefs c;
  bool noisy_logits = false;
};

// L = sum_a kept_a * c_a * w_a + the configured losses, in double.
double total_loss(const Case& cs, Routing* r, const std::vector<float>& lg, const std::vector<float>& nl,
                  const std::vector<float>& bias, const std::vector<float>& coef, bool grads,
                  std::vector<float>* dl, std::vector<float>* dn) {
  const float* b = cs.spec.has_correction_bias ? bias.data() : nullptr;
  router_forward(r, cs.spec, lg.data(), b, cs.noisy_logits ? nl.data() : nullptr, nullptr, cs.N, cs.cf,
                 99, true);
  double L = 0.0;
  std::vector<float> dw(r->A);
  for (int a = 0; a < r->A; ++a) {
    dw[a] = r->kept[a] ? coef[a] : 0.0f;
    L += static_cast<double>(dw[a]) * r->w[a];
  }
  float* g = nullptr;
  if (grads) {
    dl->assign(lg.size(), 0.0f);
    dn->assign(lg.size(), 0.0f);
    router_backward(*r, cs.spec, dw.data(), dl->data(), dn->data());
    g = dl->data();
  }
  if (cs.c.aux) L += router_aux_loss(*r, cs.spec, cs.c.aux, 1.0f, g);
  if (cs.c.z) L += router_z_loss(lg.data(), cs.N, cs.E, cs.c.z, 1.0f, g);
  if (cs.c.seq) L += router_seq_aux_loss(*r, cs.spec, cs.c.seq_len, cs.c.seq, 1.0f, g);
  if (cs.c.dev) L += router_device_loss(*r, cs.spec, cs.c.n_dev, cs.c.dev, 1.0f, g);
  return L;
}

// Four-point central differences of the fp32 router, accumulated in double; coordinates whose
// perturbation changes the selection are skipped (the loss is not differentiable there).
void grad_check(const Case& cs) {
  Routing r;
  routing_init(&r, cs.N, cs.E, cs.K, cs.spec.kind);
  auto lg = randn(cs.N * cs.E, 1, 1.5f), nl = randn(cs.N * cs.E, 2), bias = randn(cs.E, 3, 0.2f);
  auto coef = randn(static_cast<size_t>(cs.N) * cs.K * 4, 4);
  std::vector<float> dl, dn, d0, d1;
  total_loss(cs, &r, lg, nl, bias, coef, true, &dl, &dn);
  const std::vector<int32_t> sel(r.expert.begin(), r.expert.begin() + r.A);
  const std::vector<int32_t> tok(r.tok.begin(), r.tok.begin() + r.A);
  const std::vector<char> kept(r.kept.begin(), r.kept.begin() + r.A);
  auto same = [&]() {
    return std::equal(sel.begin(), sel.end(), r.expert.begin()) &&
           std::equal(tok.begin(), tok.end(), r.tok.begin()) &&
           std::equal(kept.begin(), kept.end(), r.kept.begin());
  };
  const float h = 1e-2f;
  int checked = 0;
  for (int which = 0; which < (cs.noisy_logits ? 2 : 1); ++which) {
    std::vector<float>& x = which == 0 ? lg : nl;
    const std::vector<float>& analytic = which == 0 ? dl : dn;
    double mx = 1e-9;
    for (float v : analytic) mx = std::max(mx, std::fabs(static_cast<double>(v)));
    for (size_t i = 0; i < x.size(); ++i) {
      const float keep = x[i];
      double f[4];
      const float off[4] = {-2 * h, -h, h, 2 * h};
      bool ok = true;
      for (int j = 0; j < 4; ++j) {
        x[i] = keep + off[j];
        f[j] = total_loss(cs, &r, lg, nl, bias, coef, false, &d0, &d1);
        ok &= same();
      }
      x[i] = keep;
      if (!ok) continue;
      const double fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
      EXPECT_NEAR(analytic[i], fd, 2e-3 * mx) << (which ? "noise" : "logit") << " i=" << i;
      ++checked;
    }
  }
  EXPECT_GT(checked, static_cast<int>(lg.size()) / 2);
}

TEST(RouterGrad, SoftmaxTopKWithAuxAndZ) {
  Case c;
  c.c.aux = 0.1f;
  c.c.z = 0.05f;
  grad_check(c);
}

TEST(RouterGrad, SoftmaxTopKRenormalised) {
  Case c;
  c.spec.norm_topk = true;
  c.c.aux = 0.1f;
  grad_check(c);
}

TEST(RouterGrad, TopKThenSoftmaxScaled) {
  Case c;
  c.spec.topk_then_softmax = true;
  c.spec.scale = 1.7f;
  c.c.z = 0.1f;
  grad_check(c);
}

TEST(RouterGrad, SigmoidBiasGroupsSeqAndDeviceLosses) {
  Case c;
  c.spec.score = SCORE_SIGMOID;
  c.spec.has_correction_bias = true;
  c.spec.group = GROUP_TOP2_SUM;
  c.spec.n_group = 4;
  c.spec.topk_group = 2;
  c.spec.norm_topk = true;
  c.spec.norm_eps = 1e-20f;
  c.spec.scale = 2.5f;
  c.c.aux = 0.1f;
  c.c.seq = 0.2f;
  c.c.seq_len = 3;
  c.c.dev = 0.3f;
  c.c.n_dev = 4;
  grad_check(c);
}

TEST(RouterGrad, SoftmaxGroupLimited) {
  Case c;
  c.spec.group = GROUP_MAX;
  c.spec.n_group = 4;
  c.spec.topk_group = 2;
  c.spec.scale = 1.5f;
  c.c.dev = 0.2f;
  c.c.n_dev = 2;
  grad_check(c);
}

TEST(RouterGrad, NoisyTopKBothInputs) {
  Case c;
  c.spec.kind = ROUTER_NOISY_TOPK;
  c.noisy_logits = true;
  c.c.aux = 0.1f;
  grad_check(c);
}

TEST(RouterGrad, ExpertChoice) {
  Case c;
  c.spec.kind = ROUTER_EXPERT_CHOICE;
  c.cf = 1.0f;
  c.c.z = 0.05f;
  grad_check(c);
}

// BASE: the balanced assignment is fixed under small perturbations; the gate is
// scale * sigmoid(logit), with the aux and z losses on top.
TEST(RouterGrad, BaseBalancedAssignment) {
  Case c;
  c.spec.kind = ROUTER_BASE;
  c.spec.scale = 1.5f;
  c.N = 8, c.E = 4, c.K = 1;
  c.c.aux = 0.1f;
  c.c.z = 0.05f;
  grad_check(c);
}

TEST(RouterGrad, SinkhornTop1Sigmoid) {
  Case c;
  c.spec.kind = ROUTER_SINKHORN;
  c.K = 1;
  c.c.aux = 0.1f;
  grad_check(c);
}

TEST(RouterGrad, SinkhornTop2SoftmaxRenormalised) {
  Case c;
  c.spec.kind = ROUTER_SINKHORN;
  c.spec.norm_topk = true;
  c.spec.scale = 1.3f;
  c.c.z = 0.05f;
  grad_check(c);
}

// REINFORCE's pathwise part (the combine weights of the sampled experts); the score-function
// part is checked in router_rl_test.cpp.
TEST(RouterGrad, ReinforceSampledWeights) {
  Case c;
  c.spec.kind = ROUTER_REINFORCE;
  c.c.aux = 0.1f;
  grad_check(c);
}

TEST(RouterGrad, CapacityDroppingSoftmax) {
  Case c;
  c.N = 10;
  c.cf = 0.5f;  // capacity ceil(10*2/8*0.5) = 2 per expert
  c.c.aux = 0.1f;
  grad_check(c);
}

TEST(Router, CapacityKeepsHighestWeights) {
  Routing r;
  routing_init(&r, 4, 2, 1);
  RouterSpec spec;
  // every token prefers expert 0; weights of expert 0: 0.88, 0.73, 0.95, 0.5
  std::vector<float> lg = {2.0f, 0.0f, 1.0f, 0.0f, 3.0f, 0.0f, 0.0f, 0.0f};
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, 4, 1.0f, 0, true);
  EXPECT_EQ(r.capacity, 2);
  EXPECT_EQ(r.dropped, 2);  // tokens 1 (0.73) and 3 (a 0.5 tie, so expert 0) are dropped
  EXPECT_EQ(r.sel_count, (std::vector<int32_t>{4, 0}));
  EXPECT_EQ(r.kept_count, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ((std::vector<char>(r.kept.begin(), r.kept.begin() + 4)), (std::vector<char>{1, 0, 1, 0}));
  // counts before dropping drive the aux loss: f = (1, 0)
  double aux = router_aux_loss(r, spec, 1.0f, 1.0f, nullptr);
  double P0 = 0;
  for (int t = 0; t < 4; ++t) P0 += r.probs[t * 2] / 4.0;
  EXPECT_NEAR(aux, 2.0 * 1.0 * P0, 1e-6);
}

TEST(Router, AuxLossMinimumIsAlphaUnderUniformRouting) {
  // 4 tokens, 4 experts, top-1, each token to a different expert with uniform probabilities.
  Routing r;
  routing_init(&r, 4, 4, 1);
  RouterSpec spec;
  std::vector<float> lg(16, 0.0f);
  for (int t = 0; t < 4; ++t) lg[t * 4 + t] = 1e-4f;  // break ties, p ~ uniform
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, 4, 0.0f, 0, true);
  EXPECT_NEAR(router_aux_loss(r, spec, 0.01f, 1.0f, nullptr), 0.01, 1e-6);
  // all tokens on one expert with all probability mass: L = alpha * E
  std::vector<float> one(16, -30.0f);
  for (int t = 0; t < 4; ++t) one[t * 4 + 2] = 30.0f;
  router_forward(&r, spec, one.data(), nullptr, nullptr, nullptr, 4, 0.0f, 0, true);
  EXPECT_NEAR(router_aux_loss(r, spec, 0.01f, 1.0f, nullptr), 0.04, 1e-6);
}

TEST(Router, ZLossByHand) {
  std::vector<float> lg = {0.0f, std::log(3.0f), 1.0f, 1.0f};
  // lse row 0 = log(4), row 1 = 1 + log 2
  double want = 0.5 * 0.1 * (std::pow(std::log(4.0), 2) + std::pow(1 + std::log(2.0), 2));
  EXPECT_NEAR(router_z_loss(lg.data(), 2, 2, 0.1f, 1.0f, nullptr), want, 1e-6);
}

TEST(Router, HashIsAFunctionOfTheTokenAndRandomOfTheSeed) {
  Routing r;
  routing_init(&r, 6, 16, 3);
  RouterSpec spec;
  spec.kind = ROUTER_HASH;
  std::vector<int32_t> ids = {5, 9, 5, 7, 9, 5};
  router_forward(&r, spec, nullptr, nullptr, nullptr, ids.data(), 6, 0.0f, 1, true);
  auto experts = [&](int t) { return std::vector<int32_t>(r.expert.begin() + 3 * t, r.expert.begin() + 3 * t + 3); };
  EXPECT_EQ(experts(0), experts(2));
  EXPECT_EQ(experts(0), experts(5));
  EXPECT_EQ(experts(1), experts(4));
  for (int t = 0; t < 6; ++t) {
    auto e = experts(t);
    EXPECT_TRUE(e[0] != e[1] && e[0] != e[2] && e[1] != e[2]);
    EXPECT_FLOAT_EQ(r.w[3 * t], 1.0f / 3);
  }
  spec.kind = ROUTER_RANDOM;
  router_forward(&r, spec, nullptr, nullptr, nullptr, nullptr, 6, 0.0f, 1, true);
  std::vector<int32_t> a(r.expert.begin(), r.expert.begin() + 18);
  router_forward(&r, spec, nullptr, nullptr, nullptr, nullptr, 6, 0.0f, 1, true);
  EXPECT_EQ(a, std::vector<int32_t>(r.expert.begin(), r.expert.begin() + 18));
  router_forward(&r, spec, nullptr, nullptr, nullptr, nullptr, 6, 0.0f, 2, true);
  EXPECT_NE(a, std::vector<int32_t>(r.expert.begin(), r.expert.begin() + 18));
}

TEST(Router, ExpertChoiceGivesEachExpertItsTopTokens) {
  Routing r;
  routing_init(&r, 4, 2, 1);
  RouterSpec spec;
  spec.kind = ROUTER_EXPERT_CHOICE;
  std::vector<float> lg = {3.0f, 0.0f, 2.0f, 0.0f, 0.0f, 1.0f, 0.0f, 4.0f};
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, 4, 1.0f, 0, true);
  EXPECT_EQ(r.capacity, 2);
  EXPECT_EQ(r.A, 4);
  EXPECT_EQ((std::vector<int32_t>(r.tok.begin(), r.tok.begin() + 4)), (std::vector<int32_t>{0, 1, 3, 2}));
  EXPECT_EQ((std::vector<int32_t>(r.expert.begin(), r.expert.begin() + 4)), (std::vector<int32_t>{0, 0, 1, 1}));
}

}  // namespace
}  // namespace moe
