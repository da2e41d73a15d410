// `moe train --init` end to end through the CLI on the tiny deepseek_v3 and gpt_oss checkpoints:
// 30 steps lower the training loss; the saved checkpoint keeps the family and the tensor layout;
// `moe logits` of the saved checkpoint equals the trainer's eval forward (train_forward with
// train = false) and the inference forward; `--freeze experts,router` leaves every expert and
// router tensor (and DeepSeek's correction bias) bit-identical while attention trains.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "infer/eval.h"
#include "infer/forward.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "test_util.h"
#include "train_test_util.h"
#include "text/tokenizer.h"
#include "train/dataset.h"
#include "train/train_model.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using moe_test::run_moe;
using moe_test::corpus_tokenizer;
using moe_test::final_metrics;
using moe_test::is_expert_or_router;
using moe_test::read_json;
using moe_test::slurp;
using moe_test::word_corpus;

// A trainable copy of a fixture with the corpus tokenizer beside it (train_test_util.h).
std::string make_init_copy(const std::string& fixture, int vocab) {
  return moe_test::grown_vocab_copy(fixture, vocab, true);
}

// Runs `moe train --init` for 30 steps; returns the output folder.
std::string train_init(const std::string& init, const std::string& extra) {
  const std::string out = moe_test::make_temp_dir("init_cli_out");
  auto r = run_moe("train --data " + word_corpus() + " --init " + init + " --out " + out +
                   " --steps 30 --batch 2 --seq 16 --threads 1 --eval-windows 2 --eval-every 100"
                   " --warmup 2 --lr 0.01 --quiet " +
                   extra);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// Training cross-entropy of every step in DIR/metrics.jsonl, in step order.
std::vector<double> step_ce(const std::string& out) {
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  std::vector<double> ce;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("ce") && !j.contains("final")) ce.push_back(j["ce"].get<double>());
  }
  return ce;
}

struct TensorInfo {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::map<std::string, TensorInfo> tensors_of(const std::string& path) {
  StArchive ar;
  st_open_file(&ar, path);
  std::map<std::string, TensorInfo> m;
  for (const auto& [name, t] : ar.tensors)
    m[name] = {dtype_name(t.dtype), t.shape,
               std::string(reinterpret_cast<const char*>(t.data), t.nbytes)};
  return m;
}

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// Token ids of a sentence of the corpus through the checkpoint's tokenizer.
std::vector<int32_t> probe_ids(const std::string& dir) {
  Tokenizer tok;
  tokenizer_load(&tok, dir + "/tokenizer.json");
  return tokenizer_encode(tok, "the old sailors sing of home while birds cry above the grey sea",
                          false);
}

// `moe logits --model DIR --ids ...`: (T, V) row-major.
std::vector<float> cli_logits(const std::string& dir, const std::vector<int32_t>& ids) {
  std::string list;
  for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
  auto r = run_moe("logits --threads 1 --model " + dir + " --ids " + list);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> v;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const auto& row : j.at("logits"))
    for (const auto& x : row) v.push_back(x.get<float>());
  return v;
}

// The trainer's eval forward of the saved checkpoint: weights read into a training arena.
std::vector<float> trainer_eval_logits(const std::string& dir, const std::vector<int32_t>& ids) {
  TrainModel tm;
  moe_test::load_trainer(&tm, dir);
  const ModelConfig& c = tm.cfg;
  tm.losses.capacity_factor = 0.0f;
  train_model_sync_views(&tm);
  const int T = static_cast<int>(ids.size());
  TrainActs acts;
  train_acts_init(&acts, tm, 1, T);
  std::copy(ids.begin(), ids.end(), acts.ids.begin());
  std::fill(acts.targets.begin(), acts.targets.end(), -1);
  train_forward(&tm, &acts, 0, false);
  return std::vector<float>(acts.logits.begin(),
                            acts.logits.begin() + static_cast<int64_t>(T) * c.vocab);
}

std::vector<float> infer_logits(const std::string& dir, const std::vector<int32_t>& ids) {
  Model m;
  model_load(&m, dir);
  const int T = static_cast<int>(ids.size());
  InferState st;
  infer_state_init(&st, m, T, T);
  infer_forward(m, &st, ids.data(), T, true);
  return std::vector<float>(st.logits.begin(),
                            st.logits.begin() + static_cast<int64_t>(T) * m.cfg.vocab);
}

class TrainInitCliTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainInitCliTest, LossFallsAndSavedLogitsEqualEvalForward) {
  Tokenizer tok;
  tokenizer_load(&tok, corpus_tokenizer());
  const std::string init = make_init_copy(GetParam(), tokenizer_vocab_size(tok) + 8);
  const std::string out = train_init(init, "");

  // The training loss falls: the mean of the last 5 steps well below the first 5.
  const std::vector<double> ce = step_ce(out);
  ASSERT_EQ(ce.size(), 30u);
  double first = 0.0, last = 0.0;
  for (int i = 0; i < 5; ++i) first += ce[i] / 5, last += ce[25 + i] / 5;
  EXPECT_LT(last, first - 0.5) << "first " << first << " last " << last;

  // The family, the config and the tensor layout of the input.
  const nlohmann::json in_cfg = read_json(init + "/config.json");
  const nlohmann::json out_cfg = read_json(out + "/config.json");
  EXPECT_EQ(out_cfg["model_type"], in_cfg["model_type"]);
  ModelConfig ci, co;
  config_load(&ci, init);
  config_load(&co, out);
  EXPECT_EQ(co.arch, ci.arch);
  EXPECT_EQ(co.vocab, ci.vocab);
  const auto before = tensors_of(init + "/model.safetensors");
  const auto after = tensors_of(out + "/model.safetensors");
  ASSERT_EQ(after.size(), before.size());
  int changed = 0, routing = 0;
  for (const auto& [name, t] : before) {
    ASSERT_TRUE(after.count(name)) << name << " is not in the saved checkpoint";
    EXPECT_EQ(after.at(name).dtype, t.dtype) << name;
    EXPECT_EQ(after.at(name).shape, t.shape) << name;
    changed += after.at(name).bytes != t.bytes;
    // Unfrozen, the expert and router tensors train too (what the freeze test rules out).
    if (is_expert_or_router(name)) {
      EXPECT_TRUE(after.at(name).bytes != t.bytes) << name << " did not train";
      ++routing;
    }
  }
  EXPECT_GT(routing, 0);
  EXPECT_GT(changed, static_cast<int>(before.size()) / 2);

  // `moe logits` of the saved checkpoint = the trainer's eval forward = the inference forward.
  const std::vector<int32_t> ids = probe_ids(out);
  ASSERT_GE(ids.size(), 8u);  // longer than gpt-oss's window of 4
  const std::vector<float> cli = cli_logits(out, ids);
  const std::vector<float> tr = trainer_eval_logits(out, ids);
  const std::vector<float> inf = infer_logits(out, ids);
  ASSERT_EQ(cli.size(), ids.size() * static_cast<size_t>(co.vocab));
  ASSERT_EQ(tr.size(), cli.size());
  ASSERT_EQ(inf.size(), cli.size());
  float mx = 0.0f, err_tr = 0.0f, err_inf = 0.0f;
  for (size_t i = 0; i < cli.size(); ++i) {
    mx = std::max(mx, std::fabs(tr[i]));
    err_tr = std::max(err_tr, std::fabs(cli[i] - tr[i]));
    err_inf = std::max(err_inf, std::fabs(cli[i] - inf[i]));
  }
  EXPECT_GT(mx, 0.0f);
  EXPECT_LE(err_tr, 1e-5f * mx) << "moe logits vs trainer eval forward, max|logit| " << mx;
  EXPECT_LE(err_inf, 1e-5f * mx) << "moe logits vs infer_forward, max|logit| " << mx;

  // The trainer's final validation loss (its eval forward over the validation windows) is the
  // inference forward's mean cross-entropy of the saved checkpoint over the same windows.
  {
    const int T = 16, windows = 2;
    Dataset d;
    dataset_open(&d, out + "/data");
    Model m;
    model_load(&m, out);
    double sum = 0.0;
    std::vector<int32_t> w(T), tg(T);
    for (int i = 0; i < windows; ++i) {
      ASSERT_TRUE(dataset_val_window(d, i, windows, T, w.data(), tg.data()));
      w.push_back(tg[T - 1]);
      const EvalStats e = eval_perplexity(m, w, T, nullptr);
      ASSERT_EQ(e.tokens, T);
      sum += e.mean_ce / windows;
      w.resize(T);
    }
    EXPECT_NEAR(final_metrics(out).at("val_loss").get<double>(), sum, 2e-5);
  }

  // The saved config.json means the input's model: the saved weights under the input's
  // config.json give the same logits.
  const std::string mixed = moe_test::make_temp_dir("init_cli_mixed");
  fs::copy_file(init + "/config.json", mixed + "/config.json");
  fs::copy_file(out + "/model.safetensors", mixed + "/model.safetensors");
  const std::vector<float> in_cfg_logits = infer_logits(mixed, ids);
  ASSERT_EQ(in_cfg_logits.size(), cli.size());
  float err_cfg = 0.0f;
  for (size_t i = 0; i < cli.size(); ++i)
    err_cfg = std::max(err_cfg, std::fabs(cli[i] - in_cfg_logits[i]));
  EXPECT_LE(err_cfg, 1e-5f * mx) << "saved weights under the input config.json";
}

TEST_P(TrainInitCliTest, FreezeExpertsAndRouterKeepsThemBitIdentical) {
  Tokenizer tok;
  tokenizer_load(&tok, corpus_tokenizer());
  const std::string init = make_init_copy(GetParam(), tokenizer_vocab_size(tok));
  const std::string out = train_init(init, "--freeze experts,router");
  ASSERT_EQ(step_ce(out).size(), 30u);
  const auto before = tensors_of(init + "/model.safetensors");
  const auto after = tensors_of(out + "/model.safetensors");
  ASSERT_EQ(after.size(), before.size());
  int frozen = 0, attention = 0, bias = 0;
  for (const auto& [name, t] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    EXPECT_EQ(after.at(name).shape, t.shape) << name;
    if (is_expert_or_router(name)) {
      EXPECT_TRUE(after.at(name).bytes == t.bytes) << name << " is frozen but changed";
      ++frozen;
      bias += contains(name, "e_score_correction_bias");
    } else if (contains(name, ".self_attn.")) {
      EXPECT_TRUE(after.at(name).bytes != t.bytes) << name << " did not train";
      ++attention;
    }
  }
  ModelConfig c;
  config_load(&c, init);
  const int moe_layers = c.n_moe_layers();
  if (GetParam() == "deepseek_v3_base") {
    // gate weight + correction bias + 8 experts x 3 matrices, per MoE layer
    EXPECT_EQ(frozen, moe_layers * (2 + 8 * 3));
    EXPECT_EQ(bias, moe_layers);
  } else {
    // router weight and bias + fused gate_up / down with their biases, per layer
    EXPECT_EQ(frozen, moe_layers * 6);
  }
  EXPECT_GT(attention, 0);
}

INSTANTIATE_TEST_SUITE_P(Families, TrainInitCliTest,
                         ::testing::Values("deepseek_v3_base", "gpt_oss_base"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace moe
