// MTP modules in the routing telemetry and the MTP acceptance rate: the MTP block's routing in
// `moe inspect` (collect_routing) and in metrics.jsonl, labelled as its own layer; and
// eval_mtp_acceptance against a per-position reference built from single-position calls.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/inspect_routing.h"
#include "core/error.h"
#include "infer/eval.h"
#include "infer/forward.h"
#include "model/config.h"
#include "test_util.h"
#include "train/train_model.h"
#include "train_test_util.h"

namespace moe {
namespace {

// Layer 0 dense, layer 1 MoE, and two MTP modules whose blocks (layers 2, 3) are MoE.
void random_model(TrainModel* tm, float std) {
  const nlohmann::json j = {
      {"model_type", "moe_cpp"}, {"vocab_size", 48}, {"hidden_size", 32},
      {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
      {"head_dim", 8}, {"intermediate_size", 48}, {"moe_intermediate_size", 16},
      {"num_experts", 4}, {"num_experts_per_tok", 2},
      {"mlp_only_layers", nlohmann::json::array({0})},
      {"rms_norm_eps", 1e-6}, {"max_position_embeddings", 256},
      {"num_nextn_predict_layers", 2}, {"eos_token_id", 47},
      {"router", {{"kind", "token_choice"}, {"norm_topk_prob", true}}}};
  ModelConfig cfg;
  config_parse(&cfg, j.dump(), "mtp_telemetry");
  train_model_alloc(tm, cfg);
  train_model_init_weights(tm, 11, std);
}

std::vector<int32_t> token_stream(int n, int V) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 37 + (i * i) % 13) % V);
  return ids;
}

int argmax_row(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

// Reference: each draft from its own calls, reading only the last position's logits that
// infer_forward and infer_mtp_forward return: the main model's argmax at i + 1 from a forward of
// in[0 .. i + 2), the draft from a forward of in[0 .. i + 1) and MTP module 1 over those
// positions (its last logits are position i's).
TEST(MtpAccept, EqualsPerPositionDrafts) {
  TrainModel tm;
  random_model(&tm, 0.4f);
  const Model& m = tm.w;
  const int V = m.cfg.vocab, D = m.cfg.hidden, W = 7;
  // Output rows 5 and 6 = +-3 x ones: the argmax is 5 or 6 by the sign of the normalised hidden
  // state's sum, so main model and module agree about half the time (a random head: never).
  for (const float* head : {m.lm_head, m.mtp[0].head})
    for (int i = 0; i < D; ++i) {
      const_cast<float*>(head)[5 * D + i] = 3.0f;
      const_cast<float*>(head)[6 * D + i] = -3.0f;
    }
  const std::vector<int32_t> ids = token_stream(40, V);
  int64_t drafts = 0, accepted = 0, correct = 0;
  InferState s;
  infer_state_init(&s, m, W + 1, W + 1);
  std::vector<float> h(static_cast<size_t>(W + 1) * D), h_out(h.size());
  const int64_t N = static_cast<int64_t>(ids.size()) - 2;
  for (int64_t start = 0; start < N; start += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, N + 1 - start));
    const int32_t* in = ids.data() + start;
    for (int i = 0; i + 1 < n; ++i) {
      s.pos = 0;
      infer_forward(m, &s, in, i + 2, false);
      const int verify = argmax_row(s.logits.data(), V);
      s.pos = 0;
      infer_forward(m, &s, in, i + 1, false);
      std::copy(s.h.begin(), s.h.begin() + static_cast<int64_t>(i + 1) * D, h.begin());
      infer_mtp_forward(m, &s, 0, h.data(), in + 1, 0, i + 1, h_out.data());
      const int draft = argmax_row(s.logits.data(), V);
      ++drafts;
      accepted += draft == verify;
      correct += draft == in[i + 2];
    }
  }
  const MtpAcceptance r = eval_mtp_acceptance(m, ids, W);
  EXPECT_EQ(r.drafts, drafts);
  EXPECT_DOUBLE_EQ(r.accept, static_cast<double>(accepted) / drafts);
  EXPECT_DOUBLE_EQ(r.draft_acc, static_cast<double>(correct) / drafts);
  EXPECT_GT(accepted, 0);         // the comparison must see both outcomes
  EXPECT_LT(accepted, drafts);
  EXPECT_THROW(eval_mtp_acceptance(m, {1, 2}, W), MoeError);
  EXPECT_THROW(eval_mtp_acceptance(m, ids, 0), MoeError);
}

// collect_routing: the main MoE layer routes every token; MTP module k's block routes the tokens
// with k tokens after them in their window, exactly as the module's own forward routes them.
TEST(MtpTelemetry, CollectRoutingAddsTheMtpBlocks) {
  TrainModel tm;
  random_model(&tm, 0.3f);
  const Model& m = tm.w;
  const int W = 6, D = m.cfg.hidden;
  const std::vector<int32_t> ids = token_stream(15, m.cfg.vocab);  // windows of 6, 6, 3
  const std::vector<LayerRoute> rs = collect_routing(m, ids, W);
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].layer, 1);
  EXPECT_EQ(rs[0].mtp, 0);
  EXPECT_EQ(rs[0].topk.n_tokens, 15);
  EXPECT_TRUE(rs[0].at.empty());
  EXPECT_EQ(rs[1].layer, 2);
  EXPECT_EQ(rs[1].mtp, 1);
  EXPECT_EQ(rs[1].at, (std::vector<int64_t>{0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13}));
  EXPECT_EQ(rs[2].mtp, 2);
  EXPECT_EQ(rs[2].at, (std::vector<int64_t>{0, 1, 2, 3, 6, 7, 8, 9, 12}));
  // The second window's module-1 routing, from the module's forward with a capture.
  InferState s;
  infer_state_init(&s, m, W, W);
  RouteCapture cap;
  s.capture = &cap;
  infer_forward(m, &s, ids.data() + 6, W, false);
  std::vector<float> h(s.h.begin(), s.h.begin() + static_cast<int64_t>(W) * D), h_out(h.size());
  infer_mtp_forward(m, &s, 0, h.data(), ids.data() + 7, 0, W - 1, h_out.data());
  const int K = m.cfg.top_k;
  const std::vector<int32_t> want(cap.idx[2].begin(), cap.idx[2].end());
  const std::vector<int32_t> got(rs[1].topk.expert.begin() + 5 * K,
                                 rs[1].topk.expert.begin() + 10 * K);
  EXPECT_EQ(got, want);
}

// moe train --mtp 1: metrics.jsonl carries the MTP block as layer L with "mtp": 1, and
// moe inspect --data routes it, labelled; moe eval reports the acceptance rate.
TEST(MtpTelemetry, TrainInspectAndEvalShowTheMtpBlock) {
  const std::string out = moe_test::make_temp_dir("mtp_telemetry");
  auto r = moe_test::run_moe(
      "train --data " + moe_test::word_corpus() + " --out " + out +
      " --steps 4 --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2"
      " --expert-ffn 16 --batch 4 --seq 16 --threads 1 --eval-every 4 --eval-windows 4"
      " --warmup 1 --quiet --mtp 1 --save-every 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream in(moe_test::slurp(out + "/metrics.jsonl"));
  int steps = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("final")) continue;
    ++steps;
    ASSERT_EQ(j["layers"].size(), 3u) << line;
    EXPECT_EQ(j["layers"][2]["layer"], 2);
    EXPECT_EQ(j["layers"][2]["mtp"], 1);
    EXPECT_FALSE(j["layers"][1].contains("mtp"));
    int64_t load = 0;
    for (const auto& v : j["layers"][2]["load"]) load += v.get<int64_t>();
    EXPECT_EQ(load, 4 * 16 * 2);  // every position of the batch, top-2
  }
  EXPECT_EQ(steps, 4);
  r = moe_test::run_moe("inspect --model " + out + " --data " + out + "/data --tokens 256 " +
                        "--window 32 --json-out " + out + "/inspect.json --perturb 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("layer 2 (MTP 1)"), std::string::npos) << r.out;
  const nlohmann::json j = moe_test::read_json(out + "/inspect.json");
  ASSERT_EQ(j["layers"].size(), 3u);
  EXPECT_EQ(j["layers"][2]["mtp"], 1);
  const int64_t n = j["tokens"].get<int64_t>();  // the last token of each window drafts none
  ASSERT_GT(n, 32);
  EXPECT_EQ(j["layers"][2]["tokens"].get<int64_t>(), n - (n + 31) / 32);
  r = moe_test::run_moe("eval --model " + out + " --data " + out + "/data --tokens 200 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json e = nlohmann::json::parse(r.out);
  EXPECT_GE(e["mtp_accept"].get<double>(), 0.0);
  EXPECT_LE(e["mtp_accept"].get<double>(), 1.0);
  EXPECT_GT(e["mtp_drafts"].get<int64_t>(), 100);
}

}  // namespace
}  // namespace moe
