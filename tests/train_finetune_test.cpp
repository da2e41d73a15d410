// Fine-tuning with `moe train`: validation as inference computes it (dropless) beside the loss
// with capacity drops; frozen parameter groups and per-group learning rates; --init with the
// checkpoint's own tokenizer.json.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/eval.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "test_util.h"
#include "train_test_util.h"
#include "text/tokenizer.h"
#include "train/dataset.h"
#include "train/optim.h"
#include "train/trainer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using moe_test::run_moe;
using moe_test::corpus_tokenizer;
using moe_test::final_metrics;
using moe_test::is_expert_or_router;
using moe_test::read_json;
using moe_test::slurp;
using moe_test::tensor_bytes;
using moe_test::word_corpus;

// ---------------------------------------------------------------- validation (part 6)

TEST(TrainValidation, DroplessValLossMatchesInferenceAndCapacityLossDiffers) {
  const std::string out = moe_test::make_temp_dir("ft_val");
  const int T = 16, windows = 4;
  auto r = run_moe("train --data " + word_corpus() + " --out " + out +
                   " --steps 6 --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2"
                   " --expert-ffn 32 --batch 4 --seq 16 --threads 1 --eval-every 3"
                   " --eval-windows 4 --warmup 2 --lr 0.01 --quiet --capacity-factor 0.5 --init-std 0.2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json fin = final_metrics(out);
  ASSERT_TRUE(fin.contains("val_loss") && fin.contains("val_loss_capacity")) << fin.dump();
  const double val = fin["val_loss"], val_cap = fin["val_loss_capacity"];
  // Capacity 0.5 with top-2 of 4 experts drops about half the assignments: a different loss.
  EXPECT_GT(std::fabs(val_cap - val), 1e-3) << val << " vs " << val_cap;

  // The same validation windows through the inference forward, each from an empty cache.
  Dataset d;
  dataset_open(&d, out + "/data");
  Model m;
  model_load(&m, out);
  double sum = 0.0;
  int64_t n = 0;
  double first_window_ce = NAN;
  std::vector<int32_t> ids(T), tg(T);
  for (int w = 0; w < windows; ++w) {
    ASSERT_TRUE(dataset_val_window(d, w, windows, T, ids.data(), tg.data()));
    std::vector<int32_t> seq(ids);
    seq.push_back(tg[T - 1]);
    const EvalStats e = eval_perplexity(m, seq, T, nullptr);
    ASSERT_EQ(e.tokens, T);
    sum += e.mean_ce * T;
    n += T;
    if (w == 0) first_window_ce = e.mean_ce;
  }
  EXPECT_NEAR(val, sum / n, 2e-5);
  EXPECT_GT(std::fabs(val_cap - sum / n), 1e-3);

  // `moe eval` itself on the first window (the val shard's first T + 1 tokens).
  auto e = run_moe("eval --model " + out + " --data " + out + "/data --tokens " +
                   std::to_string(T + 1) + " --window " + std::to_string(T) + " --json");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NEAR(nlohmann::json::parse(e.out)["mean_ce"].get<double>(), first_window_ce, 1e-9);
}

TEST(TrainValidation, DroplessRunReportsNoCapacityLoss) {
  const std::string out = moe_test::make_temp_dir("ft_val0");
  auto r = run_moe("train --data " + word_corpus() + " --out " + out +
                   " --steps 2 --vocab 300 --layers 1 --d-model 16 --heads 2 --experts 4 --top-k 2"
                   " --expert-ffn 16 --batch 2 --seq 8 --threads 1 --eval-windows 2 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json fin = final_metrics(out);
  EXPECT_TRUE(fin.contains("val_loss"));
  EXPECT_FALSE(fin.contains("val_loss_capacity"));
}

// ---------------------------------------------------------------- parameter groups (part 5)

TEST(TrainFreeze, GroupsOfHuggingFaceNames) {
  // Expected groups written by hand from the Hugging Face layouts.
  const std::pair<const char*, ParamGroup> cases[] = {
      {"model.embed_tokens.weight", PG_EMBEDDINGS},
      {"lm_head.weight", PG_LM_HEAD},
      {"model.norm.weight", PG_NORMS},
      {"model.layers.3.input_layernorm.weight", PG_NORMS},
      {"model.layers.3.post_attention_layernorm.weight", PG_NORMS},
      {"model.layers.0.self_attn.q_norm.weight", PG_NORMS},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", PG_NORMS},
      {"model.layers.0.self_attn.q_proj.weight", PG_ATTENTION},
      {"model.layers.0.self_attn.kv_b_proj.weight", PG_ATTENTION},
      {"model.layers.0.self_attn.sinks", PG_ATTENTION},
      {"model.layers.0.self_attn.o_proj.bias", PG_ATTENTION},
      {"model.layers.1.mlp.gate.weight", PG_ROUTER},
      {"model.layers.1.mlp.gate.e_score_correction_bias", PG_ROUTER},
      {"model.layers.1.mlp.router.weight", PG_ROUTER},
      {"model.layers.1.mlp.router.bias", PG_ROUTER},
      {"model.layers.1.block_sparse_moe.gate.weight", PG_ROUTER},
      {"model.layers.1.mlp.experts.7.down_proj.weight", PG_EXPERTS},
      {"model.layers.1.mlp.experts.gate_up_proj", PG_EXPERTS},
      {"model.layers.1.mlp.experts.gate_up_proj_bias", PG_EXPERTS},
      {"model.layers.1.block_sparse_moe.experts.2.w1.weight", PG_EXPERTS},
      {"model.layers.1.mlp.shared_expert.up_proj.weight", PG_SHARED_EXPERTS},
      {"model.layers.1.mlp.shared_experts.down_proj.weight", PG_SHARED_EXPERTS},
      {"model.layers.1.mlp.shared_expert_gate.weight", PG_SHARED_EXPERTS},
      {"model.layers.0.mlp.gate_proj.weight", PG_DENSE_MLP},
      {"model.layers.0.mlp.down_proj.weight", PG_DENSE_MLP},
  };
  for (const auto& [name, g] : cases)
    EXPECT_EQ(param_group_name(param_group_of(name)), std::string(param_group_name(g))) << name;
  EXPECT_THROW(param_group_of("model.rotary.weight"), MoeError);
}

TEST(TrainFreeze, EveryFixtureTensorHasAGroup) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(MOE_FIXTURE_DIR)) {
    if (!fs::exists(e.path() / "config.json")) continue;
    ModelConfig c;
    config_load(&c, e.path().string());
    for (bool fused : {false, true})
      for (const TensorSpec& s : model_tensor_specs(c, fused)) {
        EXPECT_NO_THROW(param_group_of(s.name)) << e.path() << " " << s.name;
        ++n;
      }
  }
  EXPECT_GT(n, 100);
}

TEST(TrainFreeze, ParseRejectsBadValues) {
  ParamGroups g;
  param_groups_parse(&g, "experts,router", "attention=0.5,lm-head=0");
  EXPECT_TRUE(g.frozen[PG_EXPERTS] && g.frozen[PG_ROUTER] && !g.frozen[PG_ATTENTION]);
  EXPECT_EQ(g.lr_mult[PG_ATTENTION], 0.5f);
  EXPECT_EQ(g.lr_mult[PG_LM_HEAD], 0.0f);
  EXPECT_EQ(g.lr_mult[PG_NORMS], 1.0f);
  for (const char* bad : {"expert", "experts,", "experts,,router", "Experts"}) {
    ParamGroups h;
    EXPECT_THROW(param_groups_parse(&h, bad, ""), MoeError) << bad;
  }
  for (const char* bad : {"experts", "experts=", "experts=x", "experts=-1", "foo=1", "experts=1e999",
                          "experts=0.5x"}) {
    ParamGroups h;
    EXPECT_THROW(param_groups_parse(&h, "", bad), MoeError) << bad;
  }
}

// One AdamW step on a small model with constant gradients: each tensor moves by its group's
// multiplier times the default step; frozen tensors have no moments and do not move.
TEST(TrainFreeze, AdamWStepScalesPerGroupAndSkipsFrozen) {
  TrainArgs a;
  a.layers = 2, a.d_model = 16, a.heads = 2, a.experts = 4, a.top_k = 2, a.expert_ffn = 8;
  a.first_dense = 1;
  auto step_delta = [&](const std::string& freeze, const std::string& lr_groups,
                        std::vector<float>* delta, AdamW* opt, TrainModel* tm) {
    train_model_alloc(tm, train_model_config(a, 40, 0));
    train_model_init_weights(tm, 3, 0.02f);
    ParamGroups g;
    param_groups_parse(&g, freeze, lr_groups);
    param_groups_freeze(tm, g);
    adamw_init(opt, *tm, AdamWParams(), g);
    for (size_t i = 0; i < tm->grads.size(); ++i) tm->grads[i] = (i % 3 == 0 ? -0.5f : 0.25f);
    const std::vector<float> before = tm->params;
    grad_clip(tm, 0.0f);
    adamw_step(opt, tm, 1e-2f);
    delta->resize(before.size());
    for (size_t i = 0; i < before.size(); ++i) (*delta)[i] = tm->params[i] - before[i];
  };
  TrainModel t1, t2;
  AdamW o1, o2;
  std::vector<float> d1, d2;
  step_delta("", "", &d1, &o1, &t1);
  step_delta("experts,norms", "attention=0.5,lm-head=3", &d2, &o2, &t2);
  int64_t state = 0;
  for (size_t i = 0; i < t2.specs.size(); ++i) {
    const TensorSpec& sp = t2.specs[i];
    int64_t n = 1;
    for (int64_t d : sp.shape) n *= d;
    const ParamGroup g = param_group_of(sp.name);
    const bool frozen = g == PG_EXPERTS || g == PG_NORMS;
    EXPECT_EQ(o2.state_off[i] < 0, frozen) << sp.name;
    if (!frozen) state += (n + 15) / 16 * 16;
    const double mult = frozen ? 0.0 : g == PG_ATTENTION ? 0.5 : g == PG_LM_HEAD ? 3.0 : 1.0;
    for (int64_t j = 0; j < n; ++j) {
      const float a1 = d1[t1.offset[i] + j], a2 = d2[t2.offset[i] + j];
      if (frozen) ASSERT_EQ(a2, 0.0f) << sp.name;
      else ASSERT_NEAR(a2, mult * a1, 1e-3 * std::fabs(mult * a1) + 1e-9) << sp.name << " " << j;
    }
  }
  EXPECT_EQ(static_cast<int64_t>(o2.m.size()), state);
  EXPECT_LT(o2.m.size(), o1.m.size());
}

TEST(TrainFreeze, CliRejectsUnknownGroupInOneLine) {
  const std::string out = moe_test::make_temp_dir("ft_bad");
  for (const std::string& flag : {std::string("--freeze experts,bogus"),
                                  std::string("--lr-groups bogus=0.1"),
                                  std::string("--lr-groups experts=fast")}) {
    auto r = run_moe("train --data " + word_corpus() + " --out " + out + " --steps 1 " + flag);
    EXPECT_NE(r.exit_code, 0) << flag;
    const std::string value = flag.substr(flag.find(' ') + 1);
    EXPECT_NE(r.err.find(flag.substr(0, flag.find(' '))), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(value.find("bogus") != std::string::npos ? "bogus" : "fast"),
              std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out + "/data")) << "rejected before the data is prepared";
  }
}

// The tiny qwen3_moe fixture (a dense layer, 8 experts top-2) with its vocabulary grown to
// `vocab`, and the corpus tokenizer beside it if with_tokenizer.
std::string make_init_dir(int vocab, bool with_tokenizer) {
  return moe_test::grown_vocab_copy("qwen3_moe_qknorm", vocab, with_tokenizer);
}

int corpus_tokenizer_vocab() {
  Tokenizer tok;
  tokenizer_load(&tok, corpus_tokenizer());
  return tokenizer_vocab_size(tok);
}

const std::string kInitRun =
    " --batch 2 --seq 16 --threads 1 --eval-windows 2 --warmup 1 --lr 0.01 --quiet";

// Runs --init on the fixture copy with extra flags; returns the output folder.
std::string run_init(const std::string& init, const std::string& extra, int steps = 4) {
  const std::string out = moe_test::make_temp_dir("ft_out");
  auto r = run_moe("train --data " + word_corpus() + " --init " + init + " --out " + out +
                   " --steps " + std::to_string(steps) + kInitRun + " " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

TEST(TrainFreeze, FrozenGroupsStayBitIdenticalAndHaveNoOptimizerState) {
  const std::string init = make_init_dir(corpus_tokenizer_vocab() + 12, true);
  const std::string out = run_init(init, "--freeze experts,router");
  const auto before = tensor_bytes(init + "/model.safetensors");
  const auto after = tensor_bytes(out + "/model.safetensors");
  ASSERT_EQ(before.size(), after.size());
  int frozen = 0, changed = 0;
  for (const auto& [name, bytes] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    if (is_expert_or_router(name)) {
      EXPECT_EQ(after.at(name), bytes) << name << " is frozen but changed";
      ++frozen;
    } else if (after.at(name) != bytes) {
      ++changed;
    }
  }
  EXPECT_EQ(frozen, 2 * (1 + 8 * 3));  // layers 1 and 2: gate + 8 experts x 3 matrices
  EXPECT_EQ(changed, static_cast<int>(before.size()) - frozen) << "every other tensor trains";
  StArchive opt;
  st_open_file(&opt, out + "/checkpoint/optimizer.safetensors");
  for (const auto& [name, bytes] : before) {
    const bool has_m = opt.find("exp_avg." + name) != nullptr;
    const bool has_v = opt.find("exp_avg_sq." + name) != nullptr;
    EXPECT_EQ(has_m, !is_expert_or_router(name)) << name;
    EXPECT_EQ(has_v, !is_expert_or_router(name)) << name;
  }
}

TEST(TrainFreeze, ZeroLearningRateKeepsValuesButKeepsOptimizerState) {
  const std::string init = make_init_dir(corpus_tokenizer_vocab(), true);
  const std::string out = run_init(init, "--lr-groups experts=0,router=0,attention=0.5");
  const auto before = tensor_bytes(init + "/model.safetensors");
  const auto after = tensor_bytes(out + "/model.safetensors");
  for (const auto& [name, bytes] : before) {
    if (is_expert_or_router(name)) EXPECT_EQ(after.at(name), bytes) << name;
    else EXPECT_NE(after.at(name), bytes) << name;
  }
  StArchive opt;
  st_open_file(&opt, out + "/checkpoint/optimizer.safetensors");
  EXPECT_NE(opt.find("exp_avg.model.layers.1.mlp.experts.0.up_proj.weight"), nullptr);
  EXPECT_NE(opt.find("exp_avg.model.layers.1.mlp.gate.weight"), nullptr);
}

TEST(TrainFreeze, ResumeWithFrozenGroupsEqualsUninterrupted) {
  const std::string init = make_init_dir(corpus_tokenizer_vocab(), true);
  const std::string flags = "--freeze experts,router,embeddings --save-every 100";
  const std::string a = run_init(init, flags, 5);
  const std::string b = moe_test::make_temp_dir("ft_resumed");
  const std::string common = "train --data " + word_corpus() + " --init " + init + " --out " + b +
                             " --steps 5" + kInitRun + " " + flags;
  auto r1 = run_moe(common + " --stop-after 2");
  EXPECT_EQ(r1.exit_code, 130) << r1.err;
  auto r2 = run_moe(common + " --resume");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(slurp(a + "/model.safetensors"), slurp(b + "/model.safetensors"));
  EXPECT_EQ(slurp(a + "/checkpoint/optimizer.safetensors"),
            slurp(b + "/checkpoint/optimizer.safetensors"));
  // Resuming with a group unfrozen that had no state is refused, naming the file and tensor.
  auto r3 = run_moe("train --data " + word_corpus() + " --init " + init + " --out " + b +
                    " --steps 7" + kInitRun + " --freeze router --resume");
  EXPECT_NE(r3.exit_code, 0);
  EXPECT_NE(r3.err.find("optimizer.safetensors"), std::string::npos) << r3.err;
  EXPECT_NE(r3.err.find("--freeze"), std::string::npos) << r3.err;
}

// ---------------------------------------------------------------- --init tokenizer (part 4)

TEST(TrainInitTokenizer, UsesTheCheckpointTokenizerWithALargerConfigVocab) {
  const int tv = corpus_tokenizer_vocab();
  const std::string init = make_init_dir(tv + 20, true);  // padded, like Qwen3's 151,936
  // --vocab asks for a different BPE: it must not be trained, the checkpoint's tokenizer is used.
  const std::string out = run_init(init, "--vocab 280", 2);
  EXPECT_EQ(slurp(out + "/data/tokenizer.json"), slurp(init + "/tokenizer.json"));
  EXPECT_EQ(slurp(out + "/tokenizer.json"), slurp(init + "/tokenizer.json"));
  const nlohmann::json meta = read_json(out + "/data/meta.json");
  EXPECT_EQ(meta["vocab_size"].get<int>(), tv);
  EXPECT_EQ(meta["eos_token_id"].get<int>(), read_json(init + "/config.json")["eos_token_id"]);
  EXPECT_EQ(read_json(out + "/config.json")["vocab_size"].get<int>(), tv + 20);
  // The data's tokens are the tokenizer's encoding of the corpus.
  Tokenizer tok;
  tokenizer_load(&tok, init + "/tokenizer.json");
  Dataset d;
  dataset_open(&d, out + "/data");
  const std::vector<int32_t> first = tokenizer_encode(tok, slurp(word_corpus() + "/doc0.txt"), false);
  ASSERT_GE(d.train.n, static_cast<int64_t>(first.size()));
  for (size_t i = 0; i < first.size(); ++i) ASSERT_EQ(d.train.token(i), first[i]) << i;
  EXPECT_TRUE(std::isfinite(final_metrics(out)["val_loss"].get<double>()));
}

TEST(TrainInitTokenizer, SmallerConfigVocabIsRejected) {
  const int tv = corpus_tokenizer_vocab();
  const std::string init = make_init_dir(tv - 5, true);
  const std::string out = moe_test::make_temp_dir("ft_small");
  auto r = run_moe("train --data " + word_corpus() + " --init " + init + " --out " + out +
                   " --steps 1" + kInitRun);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("config.json: vocab_size " + std::to_string(tv - 5)), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(TrainInitTokenizer, WithoutTokenizerTheVocabMustMatch) {
  const std::string init = make_init_dir(256, false);
  const std::string out = moe_test::make_temp_dir("ft_notok");
  auto r = run_moe("train --data " + word_corpus() + " --init " + init + " --out " + out +
                   " --steps 1 --vocab 300" + kInitRun);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no tokenizer.json"), std::string::npos) << r.err;
  // One error line (after the data preparation's summary line).
  const std::string last = r.err.substr(r.err.rfind('\n', r.err.size() - 2) + 1);
  EXPECT_EQ(last.find("no tokenizer.json") != std::string::npos, true) << r.err;
  EXPECT_EQ(r.err.find("error"), r.err.rfind("error")) << r.err;
}

}  // namespace
}  // namespace moe
