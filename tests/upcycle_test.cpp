// Upcycling preserves the dense model's function at step 0 wherever the math says it must.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "infer/forward.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/upcycle.h"

namespace moe {
namespace {

std::string make_dense() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = moe_test::make_temp_dir("dense");
  ModelConfig c;
  config_parse(&c, R"({"model_type": "moe_cpp", "vocab_size": 40, "hidden_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 8, "intermediate_size": 24,
    "moe_intermediate_size": 24, "num_experts": 1, "num_experts_per_tok": 1,
    "mlp_only_layers": [0, 1], "eos_token_id": 2, "router": {}})", "dense");
  TrainModel tm;
  train_model_alloc(&tm, c);
  train_model_init_weights(&tm, 5, 0.3f);
  export_model(tm, dir, "");
  return dir;
}

std::vector<float> logits(const std::string& dir) {
  Model m;
  model_load(&m, dir);
  const std::vector<int32_t> ids = {1, 7, 22, 5, 39, 0, 13};
  InferState st;
  infer_state_init(&st, m, 7, 7);
  infer_forward(m, &st, ids.data(), 7, true);
  return std::vector<float>(st.logits.begin(), st.logits.begin() + 7 * m.cfg.vocab);
}

float rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0, mx = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::fabs(a[i] - b[i]));
    mx = std::max(mx, std::fabs(b[i]));
  }
  return d / mx;
}

float upcycled_diff(const UpcycleParams& p) {
  std::string out = moe_test::make_temp_dir("up");
  upcycle(make_dense(), out, p);
  return rel_diff(logits(out), logits(make_dense()));
}

UpcycleParams params(int E, int K, int G, int S, bool renorm) {
  UpcycleParams p;
  p.experts = E;
  p.top_k = K;
  p.granularity = G;
  p.shared = S;
  p.renorm = renorm;
  return p;
}

TEST(Upcycle, PlainIsExact) {
  EXPECT_LT(upcycled_diff(params(4, 2, 1, 0, true)), 1e-5f);
  EXPECT_LT(upcycled_diff(params(4, 2, 1, 0, false)), 1e-5f);  // zero router, down scaled by E/K
  UpcycleParams p = params(4, 2, 1, 0, true);
  p.router_std = 0.5f;  // renormalised copies: exact for any router
  EXPECT_LT(upcycled_diff(p), 1e-5f);
}

TEST(Upcycle, FineGrainedAndSharedAreExactWhenKCoversTheSlices) {
  EXPECT_LT(upcycled_diff(params(8, 4, 4, 0, true)), 1e-5f);
  EXPECT_LT(upcycled_diff(params(6, 3, 4, 1, false)), 1e-5f);
  EXPECT_LT(upcycled_diff(params(12, 6, 3, 0, true)), 1e-5f);  // each slice selected twice
}

TEST(Upcycle, NotExactWhereTheMathSaysSo) {
  EXPECT_GT(upcycled_diff(params(8, 2, 4, 0, true)), 1e-3f);  // K does not cover the 4 slices
  UpcycleParams p = params(4, 2, 1, 0, true);
  p.noise = 0.1f;
  EXPECT_GT(upcycled_diff(p), 1e-4f);
  p = params(8, 4, 4, 0, true);
  p.router_std = 0.5f;  // a random router picks slices unevenly
  EXPECT_GT(upcycled_diff(p), 1e-3f);
}

TEST(Upcycle, BadParametersAreNamed) {
  auto err = [](const UpcycleParams& p) {
    try {
      upcycle(make_dense(), moe_test::make_temp_dir("bad"), p);
    } catch (const MoeError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(params(4, 2, 5, 0, true)).find("--granularity 5"), std::string::npos);
  EXPECT_NE(err(params(4, 2, 4, 4, true)).find("--shared 4"), std::string::npos);
  EXPECT_NE(err(params(5, 2, 4, 1, true)).find("--experts 5"), std::string::npos);
  EXPECT_NE(err(params(4, 5, 1, 0, true)).find("--top-k 5"), std::string::npos);
}

}  // namespace
}  // namespace moe
