// `moe train` end to end on a small generated corpus: loss falls, metrics are written, the saved
// model runs in the inference engine, and an interrupted-then-resumed run equals an uninterrupted
// one bit for bit.
#include <gtest/gtest.h>

#include <cmath>
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

namespace moe {
namespace {

std::vector<nlohmann::json> metrics_steps(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("final")) v.push_back(j);
  }
  return v;
}

// The BASE, Sinkhorn and REINFORCE routers train from the CLI, report their telemetry, and the
// saved model (a moe_cpp config naming the router) runs in the engine.
TEST(TrainCli, BalancedAndSampledRouters) {
  const std::string data = make_corpus();
  for (const std::string router : {"base", "sinkhorn", "reinforce"}) {
    std::string out = moe_test::make_temp_dir("train_" + router);
    const std::string k = router == "base" ? " --top-k 1" : "";
    auto r = moe_test::run_moe("train --data " + data + " --out " + out + " --steps 3" + kSmall +
                               k + " --router " + router + " --rl-entropy 0.01");
    ASSERT_EQ(r.exit_code, 0) << router << ": " << r.err;
    const auto steps = metrics_steps(out);
    ASSERT_EQ(steps.size(), 3u) << router;
    for (const auto& j : steps) {
      EXPECT_TRUE(std::isfinite(j["ce"].get<double>()));
      for (auto& l : j["layers"]) {
        if (router == "base") {  // 64 tokens a step over 4 experts: exactly 16 each
          EXPECT_EQ(l["load"], nlohmann::json::array({16, 16, 16, 16}));
          EXPECT_GT(l["auction_bids"].get<int64_t>(), 0);
        }
        if (router == "sinkhorn") {
          EXPECT_GE(l["sinkhorn_iters"].get<int64_t>(), 1);
        }
      }
      if (router == "reinforce") {
        EXPECT_LT(j["rl_baseline"].get<double>(), 0.0);  // a moving average of -CE
      }
    }
    const auto cfg = nlohmann::json::parse(slurp(out + "/config.json"));
    EXPECT_EQ(cfg["router"]["kind"], router);
    auto g = moe_test::run_moe("generate --model " + out + " --ids 1,2,3 -n 4 --ignore-eos");
    EXPECT_EQ(g.exit_code, 0) << router << ": " << g.err;
  }
}

// REINFORCE's reward baseline is part of the checkpoint: a resumed run equals an uninterrupted one.
TEST(TrainCli, ReinforceResumesBitForBit) {
  const std::string common =
      " --data " + make_corpus() + " --steps 5 --save-every 100" + kSmall + " --router reinforce";
  std::string a = moe_test::make_temp_dir("rl_full"), b = moe_test::make_temp_dir("rl_resumed");
  ASSERT_EQ(moe_test::run_moe("train --out " + a + common).exit_code, 0);
  EXPECT_EQ(moe_test::run_moe("train --out " + b + common + " --stop-after 2").exit_code, 130);
  auto r = moe_test::run_moe("train --out " + b + common + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(a + "/model.safetensors"), slurp(b + "/model.safetensors"));
}

TEST(TrainCli, RouterFlagChecksAndTop1Warning) {
  std::string out = moe_test::make_temp_dir("router_flags");
  const std::string base = "train --data " + make_corpus() + " --out " + out + " --steps 1" + kSmall;
  auto r = moe_test::run_moe(base + " --router base");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--router base assigns each token one expert: it needs --top-k 1"),
            std::string::npos) << r.err;
  r = moe_test::run_moe(base + " --router reinforce --rl-baseline-decay 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--rl-baseline-decay must be in [0, 1)"), std::string::npos) << r.err;
  r = moe_test::run_moe(base + " --top-k 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: softmax_topk with --top-k 1 and no renormalisation"),
            std::string::npos) << r.err;
  for (const char* fix : {" --top-k 1 --route-scale 4", " --top-k 2", " --top-k 1 --router topk_softmax"}) {
    r = moe_test::run_moe(base + fix);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.find("warning: softmax_topk"), std::string::npos) << fix;
  }
}

}  // namespace
}  // namespace moe
