// The hot-expert cache (moe/expert_cache.h): logits through the cache, with a cache so small that
// every call evicts and runs experts from the map, and with one that holds every expert, are
// bit-identical to the logits without it (prefill and token-by-token decode, dot and sgemm
// paths); its counters add up; and the prefetch predictor equals the next layer's router run
// directly on the same input.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/forward.h"
#include "model/checkpoint_write.h"
#include "moe/expert_cache.h"
#include "ops/backend.h"
#include "test_util.h"

namespace moe {
namespace {

// A 3-layer qwen3_moe (8 experts, top-2) or a moe_cpp model with the random router, written with
// random weights as `type`.
std::string make_model(const std::string& root, QType type, bool random_router) {
  const std::string cfg = root + "/config.json";
  FILE* f = std::fopen(cfg.c_str(), "w");
  EXPECT_NE(f, nullptr);
  if (!f) return "";
  if (random_router)
    std::fputs(R"({"architectures": ["MoeCppForCausalLM"], "model_type": "moe_cpp",
      "vocab_size": 96, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
      "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2,
      "moe_intermediate_size": 32, "intermediate_size": 32, "rms_norm_eps": 1e-6,
      "max_position_embeddings": 64, "qk_norm": "head", "qkv_bias": false,
      "decoder_sparse_step": 1, "mlp_only_layers": [], "router": {"kind": "random"}})", f);
  else
    std::fputs(R"({"model_type": "qwen3_moe", "vocab_size": 96, "hidden_size": 64,
      "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
      "intermediate_size": 128, "moe_intermediate_size": 32, "num_experts": 8,
      "num_experts_per_tok": 2, "norm_topk_prob": true, "rms_norm_eps": 1e-6,
      "max_position_embeddings": 64, "eos_token_id": 2})", f);
  std::fclose(f);
  InitOptions opt;
  opt.seed = 5;
  opt.type = type;
  CkptWriteStats stats;
  const std::string dir = root + "/" + qtype_name(type) + (random_router ? "_random" : "");
  ckpt_init_random(cfg, dir, opt, &stats);
  return dir;
}

std::vector<int32_t> prompt_ids() {
  std::vector<int32_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back((i * 29 + 3) % 96);
  return ids;
}

// Logits of the whole prompt in one call (dot_max: FfnScratch's dot thresholds, -1 default),
// then of the same tokens decoded one at a time (the last position's each).
std::vector<float> run(const Model& m, int dot_max) {
  const std::vector<int32_t> ids = prompt_ids();
  const int T = static_cast<int>(ids.size()), V = m.cfg.vocab;
  InferState st;
  infer_state_init(&st, m, T, T);
  if (dot_max >= 0) ffn_set_dot_max_tokens(&st.ffn, dot_max);
  infer_forward(m, &st, ids.data(), T, true);
  std::vector<float> out(st.logits.begin(), st.logits.begin() + static_cast<int64_t>(T) * V);
  InferState one;
  infer_state_init(&one, m, 1, T);
  for (int t = 0; t < T; ++t) {
    infer_forward(m, &one, &ids[t], 1, false);
    out.insert(out.end(), one.logits.begin(), one.logits.begin() + V);
  }
  return out;
}

// The cache size in GiB that holds n experts of m.
double gib_for(const Model& m, int n) {
  Model probe;
  model_load(&probe, m.archive.origin);
  ExpertCacheOptions o;
  o.gib = 1.0;
  expert_cache_attach(&probe, o);
  return (n * probe.expert_cache->slot_bytes + 1) / 1073741824.0;
}

void check_counters(const ExpertCache& c) {
  const ExpertCacheStats& s = c.stats;
  EXPECT_EQ(s.lookups, s.hits + s.admitted + s.from_map);
  EXPECT_EQ(s.uncacheable, 0);
  int64_t per_expert = expert_cache_expert_bytes(c, 0, 0);
  EXPECT_GT(per_expert, 0);
  // Every expert of this model has the same shapes, so the bytes are counts times one expert's.
  EXPECT_EQ(s.read_bytes, s.admitted * per_expert);
  EXPECT_EQ(s.miss_bytes, (s.admitted + s.from_map) * per_expert);
  EXPECT_LE(s.pred_hits, s.pred_total);
}

TEST(ExpertCache, LogitsBitIdenticalWithTinyAndLargeCache) {
  const std::string root = moe_test::make_temp_dir("xcache");
  for (QType type : {QT_Q4_0, QT_Q8_0, QT_BF16})
  for (bool random_router : {false, true}) {
    const std::string dir = make_model(root, type, random_router);
    SCOPED_TRACE(dir);
    Model plain;
    model_load(&plain, dir);
    const std::vector<float> ref = run(plain, -1), ref_gemm = run(plain, 0);
    for (int slots : {1, 24}) {  // 1: evicts and runs from the map; 24 = 3 layers x 8: all fit
      Model m;
      model_load(&m, dir);
      ExpertCacheOptions o;
      o.gib = gib_for(m, slots);
      expert_cache_attach(&m, o);
      ASSERT_TRUE(m.expert_cache);
      EXPECT_EQ(m.expert_cache->n_slots, slots);
      EXPECT_EQ(run(m, -1), ref) << slots << " slots";
      EXPECT_EQ(run(m, 0), ref_gemm) << slots << " slots, sgemm path";
      const ExpertCacheStats& s = m.expert_cache->stats;
      check_counters(*m.expert_cache);
      EXPECT_GT(s.pred_tokens, 0);
      if (slots == 1) {
        EXPECT_GT(s.evictions, 0);
        EXPECT_GT(s.from_map, 0);  // top-2 with one slot: the second expert of a call
      } else {
        EXPECT_EQ(s.evictions, 0);
        EXPECT_EQ(s.from_map, 0);
        EXPECT_GT(s.hits, s.admitted);
        EXPECT_LE(s.admitted, 24);
      }
    }
  }
  std::filesystem::remove_all(root);
}

// expert_cache_predict on a hidden state h equals layer l's routing of rmsnorm(h, ffn_norm_l),
// run through the MoE layer itself.
TEST(ExpertCache, PredictorMatchesNextLayerRouter) {
  const std::string root = moe_test::make_temp_dir("xpredict");
  for (bool random_router : {false, true}) {
    const std::string dir = make_model(root, QT_Q4_0, random_router);
    Model m;
    model_load(&m, dir);
    ExpertCacheOptions o;
    o.gib = gib_for(m, 4);
    expert_cache_attach(&m, o);
    ExpertCache& c = *m.expert_cache;
    const ModelConfig& cfg = m.cfg;
    const int T = 7, D = cfg.hidden, K = cfg.top_k;
    const std::vector<float> h = moe_test::randn(static_cast<size_t>(T) * D, 17);
    std::vector<int32_t> ids(T);
    for (int t = 0; t < T; ++t) ids[t] = (t * 13 + 1) % cfg.vocab;
    for (int layer = 1; layer < cfg.n_layers; ++layer) {
      const int pos = 3 * layer;
      expert_cache_predict(&c, m, layer, h.data(), T, ids.data(), pos);
      const int32_t* pred = expert_cache_prediction(c, layer);
      ASSERT_NE(pred, nullptr);
      std::vector<float> xn(static_cast<size_t>(T) * D), out(static_cast<size_t>(T) * D);
      backend().rmsnorm(xn.data(), h.data(), m.layers[layer].ffn_norm, T, D, cfg.rms_eps);
      FfnScratch s;
      ffn_scratch_init(&s, cfg, T);
      moe_forward(out.data(), cfg, m.layers[layer], xn.data(), T, &s, ids.data(), pos,
                  router_layer_seed(0, layer));
      for (int i = 0; i < T * K; ++i) EXPECT_EQ(pred[i], s.idx[i]) << "layer " << layer << " " << i;
      // Scoring the prediction against that routing: every expert predicted.
      const int64_t hits0 = c.stats.pred_hits, total0 = c.stats.pred_total;
      ExpertSegments seg;
      std::vector<ExpertWeights> xw(cfg.n_experts);
      expert_cache_bind(&c, layer, m.layers[layer].experts.data(), seg, xw.data(), s.idx.data(),
                        T, K);
      EXPECT_EQ(c.stats.pred_total - total0, T * K);
      EXPECT_EQ(c.stats.pred_hits - hits0, T * K);
      EXPECT_EQ(expert_cache_prediction(c, layer), nullptr);
    }
  }
  std::filesystem::remove_all(root);
}

TEST(ExpertCache, RejectsSizeThatHoldsNoExpert) {
  const std::string root = moe_test::make_temp_dir("xsmall");
  const std::string dir = make_model(root, QT_Q4_0, false);
  Model m;
  model_load(&m, dir);
  ExpertCacheOptions o;
  o.gib = 1e-9;
  EXPECT_THROW(expert_cache_attach(&m, o), MoeError);
  Model f32;
  model_load(&f32, make_model(root, QT_F32, false));
  o.gib = 1.0;
  EXPECT_THROW(expert_cache_attach(&f32, o), MoeError);  // no raw experts
  std::filesystem::remove_all(root);
}

// `moe generate --expert-cache`: the same tokens as without it, the cache's counters in --stats
// (whole run and per phase), and a size that holds no expert refused with a one-line error.
TEST(ExpertCache, GenerateFlagAndStats) {
  const std::string root = moe_test::make_temp_dir("xcli");
  const std::string dir = make_model(root, QT_Q4_0, false);
  Model m;
  model_load(&m, dir);
  char gib[32];  // every digit: std::to_string's six decimals would round the size down
  std::snprintf(gib, sizeof gib, "%.17g", gib_for(m, 3));
  const std::string args = "generate --threads 1 --model " + dir +
                           " --ids 1,2,3 -n 6 --ignore-eos --temperature 1 --seed 3";
  auto plain = moe_test::run_moe(args);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const std::string stats = root + "/stats.json";
  auto r = moe_test::run_moe(args + " --expert-cache " + std::string(gib) + " --stats " + stats);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, plain.out);
  EXPECT_NE(r.err.find("stats: expert cache:"), std::string::npos) << r.err;
  const auto j = nlohmann::json::parse(moe_test::slurp(stats));
  const auto& c = j["expert_cache"];
  EXPECT_EQ(c["slots"].get<int>(), 3);
  EXPECT_EQ(c["tokens"].get<int>(), 3 + 5);  // prefill, then 5 tokens fed back
  EXPECT_EQ(c["lookups"].get<int64_t>(),
            c["hits"].get<int64_t>() + c["admitted"].get<int64_t>() + c["from_map"].get<int64_t>());
  EXPECT_GT(c["prediction_accuracy"].get<double>(), 0.0);
  EXPECT_EQ(j["prefill"]["cache_lookups"].get<int64_t>() + j["decode"]["cache_lookups"].get<int64_t>(),
            c["lookups"].get<int64_t>());
  auto bad = moe_test::run_moe(args + " --expert-cache 0.000000001");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("expert cache: 0.000 GiB holds no expert"), std::string::npos) << bad.err;
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace moe
