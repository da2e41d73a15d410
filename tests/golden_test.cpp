// End-to-end checks of every fixture checkpoint against its golden logits and greedy continuation,
// through the library and through the `moe` CLI's output contracts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "infer/forward.h"
#include "infer/generate.h"
#include "io/safetensors.h"
#include "golden_util.h"
#include "test_util.h"

namespace moe {
namespace {

using moe_test::Golden;
using moe_test::load_golden;
using moe_test::max_abs_diff;

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, LogitsMatchGolden) {
  const std::string dir = moe_test::fixture_path(GetParam());
  Golden g = load_golden(dir);
  Model m;
  model_load(&m, dir);
  ASSERT_EQ(m.cfg.vocab, g.V);
  InferState st;
  infer_state_init(&st, m, g.T, g.T);
  infer_forward(m, &st, g.ids.data(), g.T, true);
  float err = max_abs_diff(st.logits.data(), g.logits.data(), g.logits.size());
  EXPECT_LE(err, 1e-4f * g.max_abs) << "max|logit| " << g.max_abs;
  RecordProperty("max_abs_err", std::to_string(err));
}

TEST_P(GoldenTest, IncrementalDecodeEqualsFullForward) {
  const std::string dir = moe_test::fixture_path(GetParam());
  Golden g = load_golden(dir);
  Model m;
  model_load(&m, dir);
  InferState full;
  infer_state_init(&full, m, g.T, g.T);
  infer_forward(m, &full, g.ids.data(), g.T, true);
  // Prefill a third of the prompt, then one token at a time through the cache.
  InferState inc;
  infer_state_init(&inc, m, g.T, g.T);
  const int first = g.T / 3;
  infer_forward(m, &inc, g.ids.data(), first, true);
  const size_t V = g.V;
  float err = max_abs_diff(inc.logits.data(), full.logits.data(), first * V);
  for (int t = first; t < g.T; ++t) {
    infer_forward(m, &inc, &g.ids[t], 1, false);
    err = std::max(err, max_abs_diff(inc.logits.data(), full.logits.data() + t * V, V));
  }
  EXPECT_EQ(inc.pos, g.T);
  EXPECT_LE(err, 1e-5f * g.max_abs);
}

TEST_P(GoldenTest, GreedyContinuationMatchesGolden) {
  const std::string dir = moe_test::fixture_path(GetParam());
  Golden g = load_golden(dir);
  Model m;
  model_load(&m, dir);
  GenerateParams p;
  p.max_new = static_cast<int>(g.greedy.size());
  EXPECT_EQ(generate(m, g.ids, p), g.greedy);
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

TEST_P(GoldenTest, CliLogitsAndGenerate) {
  const std::string dir = moe_test::fixture_path(GetParam());
  Golden g = load_golden(dir);
  auto r = moe_test::run_moe("logits --threads 1 --model " + dir + " --ids " + join_ids(g.ids));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["logits"].size(), static_cast<size_t>(g.T));
  float err = 0.0f;
  for (int t = 0; t < g.T; ++t) {
    ASSERT_EQ(j["logits"][t].size(), static_cast<size_t>(g.V));
    for (int i = 0; i < g.V; ++i)
      err = std::max(err, std::fabs(j["logits"][t][i].get<float>() - g.logits[t * g.V + i]));
  }
  EXPECT_LE(err, 1e-4f * g.max_abs);
  r = moe_test::run_moe("generate --model " + dir + " --ids " + join_ids(g.ids) + " -n " +
                        std::to_string(g.greedy.size()) + " --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>(), g.greedy);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(moe_test::fixture_names()),
                         [](const auto& info) { return info.param; });

// The suite above is instantiated from whatever fixtures it finds; finding none (or losing one)
// must fail rather than run zero cases. Every committed fixture is listed here; new ones may be
// added beside them.
TEST(GoldenFixtures, EveryCommittedFixtureIsFound) {
  const std::vector<std::string> found = moe_test::fixture_names();
  ASSERT_FALSE(found.empty()) << "no golden fixtures under " << MOE_FIXTURE_DIR;
  const char* expected[] = {"deepseek_v2_lite",
                            "deepseek_v2_qlora",
                            "deepseek_v3_base",
                            "deepseek_v3_flat_bf16",
                            "gpt_oss_base",
                            "gpt_oss_mqa_yarn",
                            "mixtral_fused_swa_tied_bf16",
                            "mixtral_legacy",
                            "olmoe_base",
                            "olmoe_clip_mha",
                            "qwen2_moe_shared",
                            "qwen2_moe_sparse_sharded",
                            "qwen3_moe_qknorm",
                            "qwen3_moe_yarn_fused_f16"};
  for (const char* name : expected)
    EXPECT_NE(std::find(found.begin(), found.end(), name), found.end())
        << name << ": no golden.safetensors under " << MOE_FIXTURE_DIR << "/" << name;
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// A session that reuses its cache prefix gives the logits of a fresh forward.
TEST(GenSession, PrefixReuseMatchesFreshForward) {
  for (const std::string& name : {std::string("qwen3_moe_qknorm"), std::string("deepseek_v3_base"),
                                  std::string("gpt_oss_base")}) {
    const std::string dir = moe_test::fixture_path(name);
    Golden g = load_golden(dir);
    Model m;
    model_load(&m, dir);
    GenSession s;
    session_init(&s, m, g.T, 4, SamplerParams());
    auto prefix = [&](int n) { return std::vector<int32_t>(g.ids.begin(), g.ids.begin() + n); };
    for (int n : {8, 12, 5, 5, g.T}) {  // grow, shrink, repeat, then the whole prompt
      session_set_prompt(&s, prefix(n));
      EXPECT_EQ(s.tokens, prefix(n));
      EXPECT_EQ(s.st.pos, n);
      float err = max_abs_diff(s.st.logits.data(), g.logits.data() + (n - 1) * g.V, g.V);
      EXPECT_LE(err, 1e-4f * g.max_abs) << name << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace moe
