// Balancing behaviour on a small corpus, against the same run without balancing: the Switch aux
// loss and the aux-loss-free bias each lower the worst max/mean expert load, and the z-loss keeps
// the router logits small.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace moe {
namespace {

struct Stats {
  double max_mean = 0, max_logit = 0;
};

// Mean over the last 20 steps of the worst layer's max/mean load; largest router logit seen.
Stats run(const std::string& corpus, const std::string& flags) {
  std::string out = moe_test::make_temp_dir("behave");
  auto r = moe_test::run_moe(
      "train --data " + corpus + " --out " + out +
      " --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 8 --top-k 2 --expert-ffn 32"
      " --batch 8 --seq 32 --threads 1 --eval-every 0 --warmup 2 --lr 0.01 --quiet --steps 60 " +
      flags);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(out + "/metrics.jsonl");
  std::vector<nlohmann::json> steps;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("layers")) steps.push_back(j);
  }
  Stats s;
  const size_t n = std::min<size_t>(20, steps.size());
  for (size_t i = steps.size() - n; i < steps.size(); ++i) {
    double worst = 0;
    for (auto& l : steps[i]["layers"]) {
      worst = std::max(worst, l["max_mean"].get<double>());
      s.max_logit = std::max(s.max_logit, l["max_logit"].get<double>());
    }
    s.max_mean += worst / n;
  }
  return s;
}

std::string corpus() {
  std::string dir = moe_test::make_temp_dir("bcorpus");
  const char* w[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to",
                     "big", "red", "house", "in", "small", "garden", "near", "river"};
  for (int d = 0; d < 6; ++d) {
    std::ofstream f(dir + "/doc" + std::to_string(d) + ".txt");
    uint32_t x = 777 + d;
    for (int i = 0; i < 1500; ++i) {
      x = x * 1664525u + 1013904223u;
      f << w[(x >> 16) % 18] << ((x >> 9) % 11 == 0 ? ". " : " ");
    }
  }
  return dir;
}

TEST(TrainBehaviour, BalancingLowersMaxLoadAndZLossBoundsLogits) {
  const std::string c = corpus();
  Stats none = run(c, "--aux-loss 0 --z-loss 0");
  Stats aux = run(c, "--aux-loss 0.05 --z-loss 0");
  Stats bias = run(c, "--router sigmoid_bias --aux-loss 0 --z-loss 0 --bias-rate 0.01");
  Stats z = run(c, "--aux-loss 0 --z-loss 0.1");
  RecordProperty("max_mean_none", std::to_string(none.max_mean));
  RecordProperty("max_mean_aux", std::to_string(aux.max_mean));
  RecordProperty("max_mean_bias", std::to_string(bias.max_mean));
  EXPECT_LT(aux.max_mean, 0.9 * none.max_mean);
  EXPECT_LT(bias.max_mean, 0.9 * none.max_mean);
  EXPECT_LT(z.max_logit, 0.5 * none.max_logit);
}

}  // namespace
}  // namespace moe
