// The BASE, Sinkhorn and REINFORCE routers against PyTorch float64 gradients written from the
// papers' definitions (tests/fixtures/routers/router_grads.json, made by
// scripts/fixtures/make_router_fixtures.py): the chosen experts, and dL/dlogits of
// L = sum over chosen (t, e) of coef[t, e] * w + REINFORCE's surrogate with fixed samples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "ops/router.h"

namespace moe {
namespace {

using json = nlohmann::json;

json load_fixture() {
  const std::string path = std::string(MOE_FIXTURE_DIR) + "/routers/router_grads.json";
  std::ifstream f(path);
  if (!f) ADD_FAILURE() << path << ": cannot open";
  return f ? json::parse(f) : json();
}

std::vector<float> floats(const json& j) { return j.get<std::vector<float>>(); }

void check_case(const json& c) {
  const std::string name = c.at("name");
  const int N = c.at("N"), E = c.at("E"), K = c.at("K");
  RouterSpec spec;
  const std::string kind = c.at("kind");
  spec.kind = kind == "base" ? ROUTER_BASE : kind == "sinkhorn" ? ROUTER_SINKHORN : ROUTER_REINFORCE;
  spec.scale = c.at("scale");
  spec.norm_topk = c.at("norm_topk");
  const bool reinforce = spec.kind == ROUTER_REINFORCE;
  const std::vector<float> lg = floats(c.at("logits")), coef = floats(c.at("coef"));
  const std::vector<std::vector<int>> want = c.at("experts");
  Routing r;
  routing_init(&r, N, E, K, spec.kind);
  router_forward(&r, spec, lg.data(), nullptr, nullptr, nullptr, N, 0.0f, 3, c.at("train"));
  ASSERT_EQ(r.A, N * K) << name;
  for (int t = 0; t < N; ++t) {
    std::vector<int> got(r.expert.begin() + t * K, r.expert.begin() + (t + 1) * K);
    std::vector<int> exp = want[t];
    if (reinforce) {  // the samples are the fixture's: the estimator is checked for fixed draws
      std::copy(exp.begin(), exp.end(), r.expert.begin() + t * K);
      const float* s = r.score.data() + t * E;
      float sum = 0.0f;
      for (int k = 0; k < K; ++k) sum += s[exp[k]];
      for (int k = 0; k < K; ++k)
        r.w[t * K + k] = s[exp[k]] * (spec.norm_topk ? 1.0f / sum : 1.0f) * spec.scale;
      continue;
    }
    std::sort(got.begin(), got.end());
    std::sort(exp.begin(), exp.end());
    EXPECT_EQ(got, exp) << name << " token " << t;
  }
  std::vector<float> dw(N * K), dl(N * E, 0.0f);
  for (int a = 0; a < N * K; ++a) dw[a] = coef[r.tok[a] * E + r.expert[a]];
  router_backward(r, spec, dw.data(), dl.data(), nullptr);
  if (reinforce) {
    const std::vector<float> adv = floats(c.at("adv"));
    const double H = router_reinforce_grad(r, spec, adv.data(), c.at("entropy"), 1.0f, dl.data());
    EXPECT_NEAR(H, c.at("mean_entropy").get<double>(), 1e-6) << name;
  }
  const std::vector<double> ref = c.at("dlogits").get<std::vector<double>>();
  double mx = 0.0;
  for (double v : ref) mx = std::max(mx, std::fabs(v));
  ASSERT_GT(mx, 0.0) << name;
  for (int i = 0; i < N * E; ++i) EXPECT_NEAR(dl[i], ref[i], 1e-5 * mx) << name << " i " << i;
}

TEST(RouterFixtures, MatchPyTorchFloat64) {
  const json doc = load_fixture();
  ASSERT_TRUE(doc.contains("cases"));
  int n = 0;
  for (const json& c : doc.at("cases")) {
    check_case(c);
    ++n;
  }
  EXPECT_EQ(n, 6);
}

}  // namespace
}  // namespace moe
