// `moe train` end to end on a small generated corpus: loss falls, metrics are written, the saved
// model runs in the inference engine, and an interrupted-then-resumed run equals an uninterrupted
// one bit for bit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace moe {
namespace {

std::string make_corpus() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = moe_test::make_temp_dir("corpus");
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to",
                         "big", "red", "house", "in", "small", "garden", "near", "river"};
  for (int d = 0; d < 6; ++d) {
    std::ofstream f(dir + "/doc" + std::to_string(d) + ".txt");
    uint32_t x = 12345 + d;
    for (int i = 0; i < 1500; ++i) {
      x = x * 1103515245u + 12345u;
      f << words[(x >> 16) % 18] << ((x >> 8) % 11 == 0 ? ".\n" : " ");
    }
  }
  return dir;
}

using moe_test::slurp;

const std::string kSmall =
    " --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2 --expert-ffn 32"
    " --batch 4 --seq 16 --threads 1 --eval-every 4 --eval-windows 4 --warmup 2 --lr 0.01 --quiet";

TEST(TrainCli, LossFallsAndModelRunsInEngine) {
  std::string out = moe_test::make_temp_dir("train");
  auto r = moe_test::run_moe("train --data " + make_corpus() + " --out " + out + " --steps 24" + kSmall);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  double first = -1, last_val = -1;
  bool final_seen = false;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("final")) {
      final_seen = true;
      last_val = j["val_loss"];
      continue;
    }
    if (first < 0) first = j["ce"];
    ASSERT_TRUE(j.contains("layers"));
    for (auto& l : j["layers"]) {
      EXPECT_EQ(l["load"].size(), 4u);
      EXPECT_GE(l["entropy"].get<double>(), 0.0);
    }
  }
  EXPECT_TRUE(final_seen);
  EXPECT_LT(last_val, first - 1.0) << "validation loss did not fall enough";
  auto g = moe_test::run_moe("generate --model " + out + " --ids 1,2,3 -n 4 --ignore-eos");
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(nlohmann::json::parse(g.out)["ids"].size(), 4u);
}

TEST(TrainCli, ResumeEqualsUninterruptedBitForBit) {
  const std::string common = " --data " + make_corpus() + " --steps 8 --save-every 100" + kSmall +
                             " --router sigmoid_bias --z-loss 0.001";
  std::string a = moe_test::make_temp_dir("full"), b = moe_test::make_temp_dir("resumed");
  ASSERT_EQ(moe_test::run_moe("train --out " + a + common).exit_code, 0);
  auto r1 = moe_test::run_moe("train --out " + b + common + " --stop-after 3");
  EXPECT_EQ(r1.exit_code, 130) << r1.err;
  EXPECT_TRUE(std::filesystem::exists(b + "/checkpoint/optimizer.safetensors"));
  auto r2 = moe_test::run_moe("train --out " + b + common + " --resume");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(slurp(a + "/model.safetensors"), slurp(b + "/model.safetensors"));
  EXPECT_EQ(slurp(a + "/checkpoint/optimizer.safetensors"), slurp(b + "/checkpoint/optimizer.safetensors"));
}

TEST(TrainCli, DivergenceStopsWithAClearMessage) {
  std::string out = moe_test::make_temp_dir("nan");
  auto r = moe_test::run_moe("train --data " + make_corpus() + " --out " + out + " --steps 20" + kSmall +
                             " --lr 1e30 --warmup 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.err.find("loss is NaN") != std::string::npos || r.err.find("loss is inf") != std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(out + "/model.safetensors"));  // nothing half-trained saved
}

TEST(TrainCli, BadFlagsAreNamed) {
  std::string out = moe_test::make_temp_dir("bad");
  struct Case {
    std::string args, needle;
  };
  for (const Case& c : std::vector<Case>{{" --top-k 9", "--top-k 9 exceeds --experts 4"},
                                         {" --router telepathy", "--router 'telepathy'"},
                                         {" --heads 3", "--d-model 32 is not a multiple of --heads 3"}}) {
    auto r = moe_test::run_moe("train --data " + make_corpus() + " --out " + out + " --steps 1" + kSmall + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << " -> " << r.err;
  }
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// --experts 1 is a dense model whatever --top-k says: its FFN is --expert-ffn wide, and the saved
// checkpoint has no MoE layer.
TEST(TrainCli, OneExpertIsDense) {
  std::string out = moe_test::make_temp_dir("train_dense");
  auto r = moe_test::run_moe("train --data " + make_corpus() + " --out " + out +
                             " --steps 2" + kSmall + " --experts 1 --top-k 2 --expert-ffn 48");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = moe_test::run_moe("inspect --json --model " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["moe_layers"], "none");
  EXPECT_EQ(j["dense_layers"], "0-1");
  const auto cfg = nlohmann::json::parse(slurp(out + "/config.json"));
  EXPECT_EQ(cfg["intermediate_size"], 48);
}

}  // namespace
}  // namespace moe
