// Multi-token prediction end to end: checkpoints in DeepSeek-V3's layout round-trip, DeepSeek-V3
// checkpoints load with or without their MTP layers, and `generate --speculative mtp` gives the
// tokens of plain greedy decoding on random models (moe_cpp GQA, DeepSeek-V3 MLA; the library
// and `moe init --random`) and on a model trained with `moe train --mtp`.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/speculative.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/train_model.h"
#include "train_test_util.h"

namespace moe {
namespace {

using moe_test::make_temp_dir;
using moe_test::run_moe;

const char* kMoeCppMtp = R"({"model_type": "moe_cpp", "vocab_size": 64, "hidden_size": 32,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
  "intermediate_size": 48, "moe_intermediate_size": 16, "num_experts": 4,
  "num_experts_per_tok": 2, "mlp_only_layers": [0], "rms_norm_eps": 1e-6,
  "max_position_embeddings": 256, "num_nextn_predict_layers": 2, "eos_token_id": 63,
  "router": {"kind": "token_choice", "norm_topk_prob": true}})";

// tests/fixtures/deepseek_v3_base's config (a transformers checkpoint) with n MTP layers.
std::string dsv3_config_text(int n) {
  nlohmann::json j = nlohmann::json::parse(
      moe_test::slurp(std::string(MOE_FIXTURE_DIR) + "/deepseek_v3_base/config.json"));
  j["num_nextn_predict_layers"] = n;
  return j.dump(2);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

// A model of cfg with N(0, std) weights (norms 1), in a training arena.
void random_arena(TrainModel* tm, const ModelConfig& cfg, float std) {
  train_model_alloc(tm, cfg);
  train_model_init_weights(tm, 5, std);
}

// The arena's tensors as StWriteTensors (pointing into it), plus `extra`.
std::vector<StWriteTensor> arena_tensors(const TrainModel& tm) {
  std::vector<StWriteTensor> out;
  for (size_t i = 0; i < tm.specs.size(); ++i)
    out.push_back({tm.specs[i].name, DT_F32, tm.specs[i].shape, tm.params.data() + tm.offset[i]});
  return out;
}

std::vector<int32_t> prompt_of(int n, int seed, int V) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = static_cast<int32_t>((seed * 7919 + i * 104729) % V);
  return p;
}

// generate_mtp with every draft depth equals generate() at temperature 0, for several prompts.
void expect_speculative_identical(const Model& m, int n_new) {
  GenerateParams p;
  p.max_new = n_new;
  p.stop_at_eos = false;
  for (int seed = 1; seed <= 3; ++seed) {
    const std::vector<int32_t> prompt = prompt_of(3 + 4 * seed, seed, m.cfg.vocab);
    const std::vector<int32_t> plain = generate(m, prompt, p);
    ASSERT_EQ(plain.size(), static_cast<size_t>(n_new));
    for (int depth = 1; depth <= m.cfg.mtp_layers; ++depth) {
      SpecStats st;
      EXPECT_EQ(generate_mtp(m, prompt, p, depth, &st), plain) << "depth " << depth << " seed " << seed;
      EXPECT_GT(st.drafted, 0);
      EXPECT_LT(st.verify_forwards, n_new);  // fewer main forwards than tokens when any is accepted
    }
  }
}

TEST(MtpCheckpoint, RoundTripsInDeepSeekV3Layout) {
  ModelConfig cfg;
  config_parse(&cfg, kMoeCppMtp, "moe_cpp_mtp");
  TrainModel tm;
  random_arena(&tm, cfg, 0.3f);
  const std::string dir = make_temp_dir("mtp_export");
  export_model(tm, dir, "");
  const nlohmann::json j = nlohmann::json::parse(moe_test::slurp(dir + "/config.json"));
  EXPECT_EQ(j.value("num_nextn_predict_layers", 0), 2) << j.dump();
  StArchive ar;
  st_open_dir(&ar, dir);
  for (int k = 0; k < 2; ++k) {
    const std::string p = "model.layers." + std::to_string(2 + k) + ".";
    for (const char* t : {"enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                          "input_layernorm.weight", "self_attn.q_proj.weight", "mlp.gate.weight",
                          "mlp.experts.3.down_proj.weight"})
      EXPECT_NE(ar.find(p + t), nullptr) << p + t;
  }
  // Loaded back: the inference model keeps the modules, the trainer gets the same arena.
  Model m;
  model_load(&m, dir);
  EXPECT_EQ(m.cfg.mtp_layers, 2);
  ASSERT_EQ(m.mtp.size(), 2u);
  EXPECT_EQ(m.layers.size(), 4u);
  EXPECT_EQ(m.mtp[1].embed, m.embed);  // shared with the main model
  TrainModel back;
  ModelConfig c2;
  config_load(&c2, dir);
  train_model_alloc(&back, c2);
  train_model_load_weights(&back, ar);
  ASSERT_EQ(back.specs.size(), tm.specs.size());
  EXPECT_TRUE(back.params == tm.params);
  // A trainer checkpoint (weights and optimizer state) too.
  AdamW opt;
  adamw_init(&opt, tm, AdamWParams(), ParamGroups());
  const std::string ck = make_temp_dir("mtp_ckpt") + "/checkpoint";
  checkpoint_save(tm, opt, 7, 3, ck, "");
  TrainModel again;
  train_model_alloc(&again, c2);
  AdamW opt2;
  adamw_init(&opt2, again, AdamWParams(), ParamGroups());
  uint64_t seed = 0;
  EXPECT_EQ(checkpoint_load(&again, &opt2, ck, &seed), 7);
  EXPECT_TRUE(again.params == tm.params);
}

TEST(MtpCheckpoint, DeepSeekV3LoadsWithAndWithoutItsMtpLayer) {
  // A transformers checkpoint (no MTP tensors) whose config counts one MTP layer: loads without.
  const std::string plain = make_temp_dir("dsv3_no_mtp");
  moe_test::copy_dir(std::string(MOE_FIXTURE_DIR) + "/deepseek_v3_base", plain);
  write_text(plain + "/config.json", dsv3_config_text(1));
  Model m0;
  model_load(&m0, plain);
  EXPECT_EQ(m0.cfg.mtp_layers, 0);
  EXPECT_TRUE(m0.mtp.empty());
  // A hub-style checkpoint: layer L holds the module, with its own embed_tokens and
  // shared_head.head copies (here scaled, to tell them from the main model's).
  ModelConfig cfg;
  config_parse(&cfg, dsv3_config_text(1), "dsv3_mtp");
  ASSERT_EQ(cfg.mtp_layers, 1);
  TrainModel tm;
  random_arena(&tm, cfg, 0.3f);
  const int64_t VD = static_cast<int64_t>(cfg.vocab) * cfg.hidden;
  std::vector<float> emb_copy(tm.w.embed, tm.w.embed + VD), head_copy(tm.w.lm_head, tm.w.lm_head + VD);
  for (float& x : emb_copy) x *= 0.5f;
  for (float& x : head_copy) x *= 2.0f;
  std::vector<StWriteTensor> ts = arena_tensors(tm);
  const std::string p = "model.layers." + std::to_string(cfg.n_layers) + ".";
  ts.push_back({p + "embed_tokens.weight", DT_F32, {cfg.vocab, cfg.hidden}, emb_copy.data()});
  ts.push_back({p + "shared_head.head.weight", DT_F32, {cfg.vocab, cfg.hidden}, head_copy.data()});
  const std::string hub = make_temp_dir("dsv3_mtp");
  st_write(hub + "/model.safetensors", ts);
  write_text(hub + "/config.json", dsv3_config_text(1));
  Model m;
  model_load(&m, hub);
  ASSERT_EQ(m.mtp.size(), 1u);
  EXPECT_EQ(m.layers.size(), static_cast<size_t>(cfg.n_layers + 1));
  EXPECT_EQ(std::memcmp(m.mtp[0].embed, emb_copy.data(), VD * 4), 0);
  EXPECT_EQ(std::memcmp(m.mtp[0].head, head_copy.data(), VD * 4), 0);
  expect_speculative_identical(m, 24);
}

TEST(MtpSpeculative, RandomMoeCppModelGivesPlainGreedyTokens) {
  ModelConfig cfg;
  config_parse(&cfg, kMoeCppMtp, "moe_cpp_mtp");
  TrainModel tm;
  random_arena(&tm, cfg, 0.3f);
  expect_speculative_identical(tm.w, 32);
}

TEST(MtpSpeculative, ErrorsAreOneLine) {
  ModelConfig cfg;
  config_parse(&cfg, kMoeCppMtp, "moe_cpp_mtp");
  TrainModel tm;
  random_arena(&tm, cfg, 0.3f);
  GenerateParams p;
  p.sampler.temperature = 0.7f;
  EXPECT_THROW(generate_mtp(tm.w, {1, 2}, p, 0, nullptr), MoeError);
  p.sampler.temperature = 0.0f;
  EXPECT_THROW(generate_mtp(tm.w, {1, 2}, p, 3, nullptr), MoeError);  // 2 modules only
  config_parse(&cfg, R"({"model_type": "moe_cpp", "vocab_size": 16, "hidden_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_experts": 2,
    "num_experts_per_tok": 1, "moe_intermediate_size": 8, "router": {}})", "no_mtp");
  TrainModel plain;
  random_arena(&plain, cfg, 0.3f);
  EXPECT_THROW(generate_mtp(plain.w, {1, 2}, p, 0, nullptr), MoeError);
  const std::string bad = make_temp_dir("mtp_bad_cfg");
  write_text(bad + "/config.json", dsv3_config_text(-1));
  ModelConfig c;
  try {
    config_load(&c, bad);
    ADD_FAILURE() << "a negative num_nextn_predict_layers was accepted";
  } catch (const MoeError& e) {
    EXPECT_NE(std::string(e.what()).find("num_nextn_predict_layers"), std::string::npos) << e.what();
  }
}

// `moe init --random` of an MTP config, then `moe generate --speculative mtp --compare-plain`
// (which fails when the outputs differ).
TEST(MtpCli, InitRandomThenSpeculativeMatchesPlain) {
  const std::string dir = make_temp_dir("mtp_cli_init");
  write_text(dir + "/config.json", kMoeCppMtp);
  auto r = run_moe("init --config " + dir + "/config.json --random --out " + dir + "/model");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_moe("generate --model " + dir + "/model --ids 5,9,14,3 -n 24 --ignore-eos --threads 1 "
              "--speculative mtp --compare-plain");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("outputs identical"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("drafted tokens accepted"), std::string::npos) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"].size(), 24u);
}

// `moe train --mtp 1`: per-depth MTP loss in metrics.jsonl, and the trained model's speculative
// decode equals its plain greedy decode.
TEST(MtpCli, TrainedModelSpeculativeMatchesPlain) {
  const std::string out = make_temp_dir("mtp_train");
  auto r = run_moe("train --data " + moe_test::word_corpus() + " --out " + out +
                   " --steps 30 --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2"
                   " --expert-ffn 32 --batch 4 --seq 32 --threads 1 --eval-every 30"
                   " --eval-windows 4 --warmup 2 --lr 0.01 --quiet --mtp 1 --mtp-weight 0.3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  double first = -1, last = -1;
  while (std::getline(f, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("final")) continue;
    ASSERT_TRUE(j.contains("mtp") && j["mtp"].size() == 1) << line;
    (first < 0 ? first : last) = j["mtp"][0].get<double>();
  }
  EXPECT_LT(last, first - 0.5) << "the MTP module's loss did not fall";
  r = run_moe("generate --model " + out + " --ids 10,20,30,40,50 -n 32 --ignore-eos --threads 1 "
              "--speculative mtp --compare-plain");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("outputs identical"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe
