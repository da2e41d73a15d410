// The trainer's eval forward (train_forward with train = false, dropless) on every fixture
// checkpoint of the seven families: the same logits as the golden ones (from the independent
// float64 reference) and as the inference forward (MLA there runs in the absorbed form, here in
// the plain one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "infer/forward.h"
#include "io/safetensors.h"
#include "golden_util.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/train_model.h"

namespace moe {
namespace {

using moe_test::Golden;
using moe_test::load_golden;
using moe_test::max_abs_diff;

class TrainGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainGoldenTest, EvalForwardMatchesGoldenAndInference) {
  const std::string dir = moe_test::fixture_path(GetParam());
  const Golden g = load_golden(dir);
  ModelConfig c;
  config_load(&c, dir);
  TrainModel tm;
  train_model_alloc(&tm, c);
  StArchive ar;
  st_open_dir(&ar, dir);
  train_model_load_weights(&tm, ar);
  tm.losses.capacity_factor = 0.0f;
  ASSERT_EQ(tm.cfg.vocab, g.V);
  TrainActs acts;
  train_acts_init(&acts, tm, 1, g.T);
  std::copy(g.ids.begin(), g.ids.end(), acts.ids.begin());
  train_forward(&tm, &acts, 0, false);
  const size_t n = g.logits.size();
  const float err = max_abs_diff(acts.logits.data(), g.logits.data(), n);
  EXPECT_LE(err, 1e-4f * g.max_abs) << "golden, max|logit| " << g.max_abs;

  Model m;
  model_load(&m, dir);
  InferState st;
  infer_state_init(&st, m, g.T, g.T);
  infer_forward(m, &st, g.ids.data(), g.T, true);
  const float err_inf = max_abs_diff(acts.logits.data(), st.logits.data(), n);
  EXPECT_LE(err_inf, 1e-5f * g.max_abs) << "inference forward, max|logit| " << g.max_abs;
  RecordProperty("max_abs_err", std::to_string(err));
}

// A checkpoint loaded into the trainer and saved again keeps its family (model_type) and tensor
// layout, and the inference engine gives the golden logits from the saved copy.
TEST_P(TrainGoldenTest, SavedCheckpointKeepsLayoutAndLogits) {
  const std::string dir = moe_test::fixture_path(GetParam());
  const Golden g = load_golden(dir);
  ModelConfig c;
  config_load(&c, dir);
  TrainModel tm;
  train_model_alloc(&tm, c);
  StArchive ar;
  st_open_dir(&ar, dir);
  train_model_load_weights(&tm, ar);
  const std::string out = moe_test::make_temp_dir("train_golden_" + GetParam()) + "/saved";
  export_model(tm, out, "");
  ModelConfig back;
  config_load(&back, out);
  EXPECT_EQ(back.arch, c.arch) << arch_name(back.arch);
  StArchive saved;
  st_open_dir(&saved, out);
  for (const auto& kv : ar.tensors)
    EXPECT_TRUE(saved.find(kv.first) || kv.first.find("rotary_emb.inv_freq") != std::string::npos)
        << kv.first << " is not in the saved checkpoint";
  EXPECT_EQ(saved.tensors.size(), tm.specs.size());
  Model m;
  model_load(&m, out);
  InferState st;
  infer_state_init(&st, m, g.T, g.T);
  infer_forward(m, &st, g.ids.data(), g.T, true);
  const float err = max_abs_diff(st.logits.data(), g.logits.data(), g.logits.size());
  EXPECT_LE(err, 1e-4f * g.max_abs) << "max|logit| " << g.max_abs;
}

// Fine-tuning a checkpoint: 30 AdamW steps on one repeated batch lower the loss, and the saved
// checkpoint's inference logits equal the trainer's eval forward.
TEST_P(TrainGoldenTest, FineTuneLowersLossAndSavedLogitsMatchEvalForward) {
  const std::string dir = moe_test::fixture_path(GetParam());
  ModelConfig c;
  config_load(&c, dir);
  TrainModel tm;
  train_model_alloc(&tm, c);
  StArchive ar;
  st_open_dir(&ar, dir);
  train_model_load_weights(&tm, ar);
  AdamW opt;
  adamw_init(&opt, tm, AdamWParams());
  const int B = 2, T = 12;
  TrainActs acts;
  train_acts_init(&acts, tm, B, T);
  for (int i = 0; i < B * T; ++i) acts.ids[i] = static_cast<int32_t>((i * 37 + 11) % c.vocab);
  for (int i = 0; i < B * T; ++i) acts.targets[i] = i % T == T - 1 ? -1 : acts.ids[i + 1];
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 30; ++step) {
    std::fill(tm.grads.begin(), tm.grads.end(), 0.0f);
    const double loss = train_forward(&tm, &acts, step, true).total();
    if (step == 0) first = loss;
    last = loss;
    train_backward(&tm, &acts, 1.0f);
    grad_clip(&tm, 1.0f);
    adamw_step(&opt, &tm, 3e-3f);
  }
  EXPECT_LT(last, first - 0.5) << "first " << first << " last " << last;

  train_forward(&tm, &acts, 0, false);
  const std::string out = moe_test::make_temp_dir("finetune_" + GetParam()) + "/saved";
  export_model(tm, out, "");
  Model m;
  model_load(&m, out);
  EXPECT_EQ(m.cfg.arch, c.arch);
  float mx = 0.0f, err = 0.0f;
  for (int b = 0; b < B; ++b) {
    InferState st;
    infer_state_init(&st, m, T, T);
    infer_forward(m, &st, acts.ids.data() + b * T, T, true);
    const float* want = acts.logits.data() + static_cast<int64_t>(b) * T * c.vocab;
    for (int64_t i = 0; i < static_cast<int64_t>(T) * c.vocab; ++i) {
      mx = std::max(mx, std::fabs(want[i]));
      err = std::max(err, std::fabs(st.logits[i] - want[i]));
    }
  }
  EXPECT_LE(err, 1e-5f * mx) << "max|logit| " << mx;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TrainGoldenTest, ::testing::ValuesIn(moe_test::fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// `moe train --init` refuses a quantized checkpoint before the first step (before preparing any
// data), with a one-line error naming the file and tensor and a non-zero exit.
TEST(TrainGoldenFixtures, TrainCliRefusesQuantizedInit) {
  const std::string tmp = moe_test::make_temp_dir("refuse_init");
  {
    std::ofstream f(tmp + "/corpus.txt");
    for (int i = 0; i < 200; ++i) f << "the cat sat on the mat and the dog ran to the house\n";
  }
  moe_test::RunResult q = moe_test::run_moe("quantize --in " +
                                            moe_test::fixture_path("qwen3_moe_qknorm") +
                                            " --out " + tmp + "/q8 --type q8_0 --experts-only");
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const moe_test::RunResult r =
      moe_test::run_moe("train --data " + tmp + "/corpus.txt --out " + tmp + "/out --steps 2 " +
                        "--vocab 300 --batch 2 --seq 16 --quiet --init " + tmp + "/q8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("q8/model.safetensors: tensor 'model.layers."), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("quantized checkpoint"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp + "/out/metrics.jsonl"));
  EXPECT_FALSE(std::filesystem::exists(tmp + "/out/data"));
}

TEST(TrainGoldenFixtures, AllSevenFamiliesPresent) {
  EXPECT_GE(moe_test::fixture_names().size(), 14u);
}

}  // namespace
}  // namespace moe
