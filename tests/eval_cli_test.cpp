// `moe eval` end to end on a tiny trained model: a model against itself, its perplexity against an
// independent computation (infer_forward + a plain log-softmax here), a q8_0 copy against the
// original, and bad input.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "infer/forward.h"
#include "model/weights.h"
#include "test_util.h"
#include "train/dataset.h"

namespace moe {
namespace {

// A tiny MoE trained for a few steps on a generated corpus; its OUT/data is a prepared folder.
std::string trained_model() {
  static std::string out;
  if (!out.empty()) return out;
  const std::string corpus = moe_test::make_temp_dir("eval_corpus");
  const char* words[] = {"a", "quiet", "boat", "drifts", "past", "the", "harbour", "lights",
                         "while", "gulls", "circle", "over", "grey", "water", "at", "dawn"};
  for (int d = 0; d < 5; ++d) {
    std::ofstream f(corpus + "/doc" + std::to_string(d) + ".txt");
    uint32_t x = 4242 + d;
    for (int i = 0; i < 1200; ++i) {
      x = x * 1664525u + 1013904223u;
      f << words[(x >> 16) % 16] << ((x >> 9) % 13 == 0 ? ".\n" : " ");
    }
  }
  out = moe_test::make_temp_dir("eval_model");
  auto r = moe_test::run_moe(
      "train --data " + corpus + " --out " + out +
      " --steps 12 --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2"
      " --expert-ffn 32 --batch 4 --seq 16 --threads 1 --eval-every 0 --eval-windows 2"
      " --warmup 2 --lr 0.01 --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

nlohmann::json eval_json(const std::string& args) {
  auto r = moe_test::run_moe("eval --json --threads 1 " + args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

TEST(EvalCli, ModelAgainstItselfHasNoChange) {
  const std::string run = trained_model();
  const auto j = eval_json("--model " + run + " --data " + run + "/data --window 24 --ref " + run);
  ASSERT_TRUE(j.contains("mean_kl"));
  EXPECT_EQ(j["mean_kl"].get<double>(), 0.0);
  EXPECT_EQ(j["max_kl"].get<double>(), 0.0);
  EXPECT_EQ(j["max_abs_dlogit"].get<double>(), 0.0);
  EXPECT_EQ(j["top1_agree"].get<double>(), 1.0);
  EXPECT_EQ(j["ppl_ratio"].get<double>(), 1.0);
  EXPECT_EQ(j["ppl"].get<double>(), j["ref_ppl"].get<double>());
  EXPECT_GT(j["tokens"].get<int64_t>(), 100);
}

// Windows as documented in infer/eval.h, computed here from scratch.
TEST(EvalCli, PerplexityIsExpOfIndependentMeanCrossEntropy) {
  const std::string run = trained_model();
  const int kTokens = 301, kWindow = 64;  // 300 predictions: 4 full windows and one of 44
  const auto j = eval_json("--model " + run + " --data " + run + "/data --window " +
                           std::to_string(kWindow) + " --tokens " + std::to_string(kTokens));
  ASSERT_TRUE(j.contains("ppl"));
  EXPECT_EQ(j["tokens"].get<int>(), kTokens - 1);
  EXPECT_EQ(j["windows"].get<int>(), 5);

  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  Dataset ds;
  dataset_open(&ds, run + "/data");
  ASSERT_GE(ds.val.n, kTokens);
  std::vector<int32_t> ids(kTokens);
  for (int i = 0; i < kTokens; ++i) ids[i] = ds.val.token(i);
  Model m;
  model_load(&m, run);
  const int V = m.cfg.vocab;
  InferState st;
  infer_state_init(&st, m, kWindow, kWindow);
  double nll = 0;
  int scored = 0;
  for (int start = 0; start + 1 < kTokens; start += kWindow) {
    const int n = std::min(kWindow, kTokens - 1 - start);
    st.pos = 0;
    infer_forward(m, &st, ids.data() + start, n, true);
    for (int t = 0; t < n; ++t) {
      const float* row = st.logits.data() + static_cast<size_t>(t) * V;
      double mx = row[0];
      for (int v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      double z = 0;
      for (int v = 0; v < V; ++v) z += std::exp(row[v] - mx);
      nll -= row[ids[start + t + 1]] - mx - std::log(z);
      ++scored;
    }
  }
  ASSERT_EQ(scored, kTokens - 1);
  const double mean_ce = nll / scored;
  EXPECT_NEAR(j["mean_ce"].get<double>(), mean_ce, 1e-6 * mean_ce);
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(mean_ce), 1e-6 * std::exp(mean_ce));
  // Trained for a few steps: better than uniform over the vocabulary.
  EXPECT_LT(j["ppl"].get<double>(), V);
}

TEST(EvalCli, Q8_0GivesASmallNonZeroChange) {
  const std::string run = trained_model();
  const std::string q8 = moe_test::make_temp_dir("eval_q8") + "/q8";
  auto r = moe_test::run_moe("quantize --in " + run + " --out " + q8 + " --type q8_0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = eval_json("--model " + q8 + " --data " + run + "/data --window 32 --ref " + run);
  ASSERT_TRUE(j.contains("mean_kl"));
  EXPECT_GT(j["mean_kl"].get<double>(), 0.0);
  EXPECT_LT(j["mean_kl"].get<double>(), 1e-3);
  EXPECT_GT(j["max_abs_dlogit"].get<double>(), 0.0);
  EXPECT_GT(j["top1_agree"].get<double>(), 0.95);
  EXPECT_NEAR(j["ppl_ratio"].get<double>(), 1.0, 0.01);
  EXPECT_NE(j["ppl"].get<double>(), j["ref_ppl"].get<double>());
}

TEST(EvalCli, BadInputIsOneLineNamingTheFlagOrFile) {
  const std::string run = trained_model();
  const std::string tmp = moe_test::make_temp_dir("eval_bad");
  // A random model whose vocabulary is 32 larger.
  auto cfg = nlohmann::json::parse(moe_test::slurp(run + "/config.json"));
  const int V = cfg["vocab_size"].get<int>();
  cfg["vocab_size"] = V + 32;
  std::ofstream(tmp + "/config.json") << cfg.dump();
  auto r = moe_test::run_moe("init --random --config " + tmp + "/config.json --out " + tmp + "/wide");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ofstream(tmp + "/empty.txt").flush();

  struct Case {
    std::string args, needle;
  };
  const std::string base = "eval --model " + run;
  for (const Case& c : std::vector<Case>{
           {" --data " + tmp + "/missing", tmp + "/missing: no such file"},
           {" --data " + tmp, tmp + ": a folder without meta.json"},
           {" --data " + tmp + "/empty.txt", tmp + "/empty.txt: the data file is empty"},
           {" --data " + run + "/data --window 0", "--window must be positive"},
           {" --data " + run + "/data --tokens -5", "--tokens must be >= 0"},
           {" --data " + run + "/data --ref " + tmp + "/wide",
            "--ref " + tmp + "/wide: vocab_size " + std::to_string(V + 32) + " differs"},
           {" --data " + run + "/data --ref " + tmp + "/missing", tmp + "/missing"}}) {
    r = moe_test::run_moe(base + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_EQ(r.err.rfind("moe: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << " -> " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // The wide model scored on the narrower data works: ids fit its vocabulary.
  r = moe_test::run_moe("eval --model " + tmp + "/wide --data " + run + "/data --tokens 50");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("perplexity"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace moe
