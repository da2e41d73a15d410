// `moe generate --stats`: load, prefill and per-step decode timings, page faults and bytes read.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace moe {
namespace {

TEST(GenerateStats, WritesPhasesAndEveryDecodeStep) {
  const std::vector<std::string> names = moe_test::fixture_names();
  ASSERT_FALSE(names.empty());
  const std::string model = moe_test::fixture_path(names[0]);
  const std::string stats = moe_test::make_temp_dir("gen_stats") + "/stats.json";
  auto r = moe_test::run_moe("generate --threads 1 --model " + model +
                             " --ids 1,2,3 -n 5 --ignore-eos --stats " + stats);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"].size(), 5u);
  EXPECT_NE(r.err.find("stats: load"), std::string::npos) << r.err;
  const auto j = nlohmann::json::parse(moe_test::slurp(stats));
  EXPECT_EQ(j["prefill"]["tokens"].get<int>(), 3);
  EXPECT_EQ(j["decode"]["tokens"].get<int>(), 4);  // the first token comes from the prefill
  EXPECT_GT(j["decode"]["tokens_per_s"].get<double>(), 0.0);
  ASSERT_EQ(j["decode_steps"]["rows"].size(), 4u);
  EXPECT_EQ(j["decode_steps"]["columns"][2], "read_bytes");
  double sum = 0;
  for (const auto& row : j["decode_steps"]["rows"]) {
    EXPECT_GE(row[0].get<double>(), 0.0);
    EXPECT_GE(row[1].get<int64_t>(), 0);
    sum += row[0].get<double>();
  }
  EXPECT_NEAR(sum, j["decode"]["seconds"].get<double>(), 1e-6);
  for (const char* phase : {"load", "prefill", "decode"}) {
    EXPECT_GE(j[phase]["major_faults"].get<int64_t>(), 0) << phase;
    EXPECT_GE(j[phase]["read_bytes"].get<int64_t>(), -1) << phase;  // -1: no /proc/self/io
  }
}

TEST(GenerateStats, NeedsIds) {
  const std::string model = moe_test::fixture_path(moe_test::fixture_names()[0]);
  auto r = moe_test::run_moe("generate --model " + model + " --prompt hi --stats /dev/null");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--stats works with --ids only"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe
