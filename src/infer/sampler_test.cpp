// Sampler: greedy, seeding, top-k / top-p truncation and the sampled distribution.
#include "infer/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"

namespace moe {
namespace {

std::vector<int32_t> draw(const SamplerParams& p, const std::vector<float>& logits, int n) {
  Sampler s;
  sampler_init(&s, p, static_cast<int>(logits.size()));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(sampler_next(&s, logits.data(), static_cast<int>(logits.size())));
  return out;
}

const std::vector<float> kLogits = {0.1f, 1.5f, -0.3f, 1.2f, 0.9f, -2.0f};

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  SamplerParams p;
  EXPECT_EQ(draw(p, kLogits, 3), (std::vector<int32_t>{1, 1, 1}));
  EXPECT_EQ(draw(p, {2.0f, 3.0f, 3.0f}, 1), (std::vector<int32_t>{1}));
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDiffers) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.seed = 11;
  auto a = draw(p, kLogits, 64), b = draw(p, kLogits, 64);
  EXPECT_EQ(a, b);
  p.seed = 12;
  EXPECT_NE(draw(p, kLogits, 64), a);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 1;
  EXPECT_EQ(draw(p, kLogits, 20), std::vector<int32_t>(20, 1));
  p.top_k = 0;
  p.top_p = 1e-6f;
  EXPECT_EQ(draw(p, kLogits, 20), std::vector<int32_t>(20, 1));
}

TEST(Sampler, TopKRestrictsSupport) {
  SamplerParams p;
  p.temperature = 2.0f;
  p.top_k = 3;  // ids 1, 3, 4
  for (int32_t id : draw(p, kLogits, 500)) EXPECT_TRUE(id == 1 || id == 3 || id == 4) << id;
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  // probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two.
  std::vector<float> lg = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_p = 0.7f;
  int count0 = 0;
  const int n = 20000;
  for (int32_t id : draw(p, lg, n)) {
    EXPECT_NE(id, 2);
    count0 += id == 0;
  }
  // renormalised: P(0) = 0.5 / 0.8 = 0.625; 5 standard deviations is about 0.017
  EXPECT_NEAR(count0 / static_cast<double>(n), 0.625, 0.017);
}

TEST(Sampler, FrequenciesFollowSoftmaxWithTemperature) {
  SamplerParams p;
  p.temperature = 0.7f;
  p.seed = 3;
  const int n = 40000;
  std::vector<int> counts(kLogits.size());
  for (int32_t id : draw(p, kLogits, n)) ++counts[id];
  double z = 0;
  for (float l : kLogits) z += std::exp(l / 0.7);
  for (size_t i = 0; i < kLogits.size(); ++i) {
    double pi = std::exp(kLogits[i] / 0.7) / z;
    double sd = std::sqrt(pi * (1 - pi) / n);
    EXPECT_NEAR(counts[i] / static_cast<double>(n), pi, 5 * sd + 1e-4) << i;
  }
}

TEST(Sampler, RejectsBadParameters) {
  Sampler s;
  SamplerParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(sampler_init(&s, p, 4), MoeError);
  p.top_p = 1.0f;
  p.temperature = -1.0f;
  EXPECT_THROW(sampler_init(&s, p, 4), MoeError);
  p.temperature = 1.0f;
  p.top_k = -2;
  EXPECT_THROW(sampler_init(&s, p, 4), MoeError);
}

}  // namespace
}  // namespace moe
