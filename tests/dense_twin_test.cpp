// The dense twin (`moe train --dense-twin`): one FFN as wide as the MoE's active FFN, and
// `moe inspect --dense-twin` showing both validation losses.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "analysis/experiments.h"
#include "model/config.h"
#include "test_util.h"
#include "train_test_util.h"
#include "train/trainer.h"

namespace moe {
namespace {

TEST(DenseTwin, WidthIsTheActiveFfn) {
  TrainArgs a;  // the default MoE
  a.experts = 8, a.top_k = 2, a.expert_ffn = 384;
  TrainArgs t = dense_twin_args(a);
  EXPECT_EQ(t.experts, 1);
  EXPECT_EQ(t.expert_ffn, 768);  // 2 x 384
  a.experts = 16, a.top_k = 3, a.expert_ffn = 128, a.shared_experts = 1;
  EXPECT_EQ(dense_twin_args(a).expert_ffn, 512);  // 3 x 128 + 128
  a.shared_experts = 2, a.shared_ffn = 200, a.renorm = true, a.route_scale = 4.0f;
  a.router = "sinkhorn";
  t = dense_twin_args(a);
  EXPECT_EQ(t.expert_ffn, 784);  // 3 x 128 + 2 x 200
  EXPECT_EQ(t.shared_experts, 0);
  EXPECT_EQ(t.router, "softmax_topk");
  EXPECT_FALSE(t.renorm);
  EXPECT_EQ(t.route_scale, 1.0f);
  EXPECT_EQ(t.steps, a.steps);
  EXPECT_EQ(t.lr, a.lr);
  EXPECT_EQ(t.seed, a.seed);
  TrainArgs d;
  d.experts = 1, d.expert_ffn = 300;
  EXPECT_EQ(dense_twin_args(d).expert_ffn, 300);  // a dense model is its own twin
}

// Every parameter a token uses is the same in the MoE and its twin, except the router's E x D
// per layer: the twin's FFN has exactly the active FFN's matrices.
TEST(DenseTwin, ActiveParametersMatchButTheRouter) {
  TrainArgs a;
  a.layers = 3, a.d_model = 64, a.heads = 4;
  a.experts = 8, a.top_k = 2, a.expert_ffn = 96, a.shared_experts = 1, a.shared_ffn = 32;
  const ModelConfig moe = train_model_config(a, 500, 0);
  const ModelConfig twin = train_model_config(dense_twin_args(a), 500, 0);
  EXPECT_EQ(moe.n_moe_layers(), 3);
  EXPECT_EQ(twin.n_moe_layers(), 0);
  EXPECT_EQ(twin.dense_ffn, 2 * 96 + 32);
  const ExpSize sm = experiment_size(moe, 64), st = experiment_size(twin, 64);
  EXPECT_EQ(sm.active - st.active, 3 * 8 * 64);
}

TEST(DenseTwin, TrainAndInspectShowBothLosses) {
  const std::string flags =
      " --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2 --expert-ffn 24"
      " --batch 4 --seq 16 --threads 1 --eval-every 3 --eval-windows 4 --warmup 1 --steps 6"
      " --save-every 0 --quiet";
  const std::string m = moe_test::make_temp_dir("twin-moe"), t = moe_test::make_temp_dir("twin");
  auto r = moe_test::run_moe("train --data " + moe_test::word_corpus() + " --out " + m + flags);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = moe_test::run_moe("train --data " + m + "/data --out " + t + flags + " --dense-twin");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ModelConfig tc;
  config_load(&tc, t);
  EXPECT_EQ(tc.n_moe_layers(), 0);
  EXPECT_EQ(tc.dense_ffn, 48);
  const double vm = moe_test::final_metrics(m)["val_loss"].get<double>();
  const double vt = moe_test::final_metrics(t)["val_loss"].get<double>();
  ASSERT_GT(vm, 0.0);
  ASSERT_GT(vt, 0.0);
  EXPECT_NE(vm, vt);
  r = moe_test::run_moe("inspect --model " + m + " --dense-twin " + t + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out)["validation"];
  EXPECT_DOUBLE_EQ(j["moe_val_loss"].get<double>(), vm);
  EXPECT_DOUBLE_EQ(j["dense_twin_val_loss"].get<double>(), vt);
  EXPECT_EQ(j["dense_twin_ffn"].get<int>(), 48);
  r = moe_test::run_moe("inspect --model " + m + " --dense-twin " + t);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("dense twin (FFN 48)"), std::string::npos) << r.out;
  const std::string html = m + "/report.html";
  r = moe_test::run_moe("inspect --model " + m + " --report " + html + " --dense-twin " + t);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(moe_test::slurp(html).find("against the dense twin"), std::string::npos);
  // The twin must be dense, and finished.
  r = moe_test::run_moe("inspect --model " + m + " --dense-twin " + m);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("needs a dense model"), std::string::npos) << r.err;
  r = moe_test::run_moe("train --data " + m + "/data --out " + t + "2" + flags +
                        " --dense-twin --init " + m);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--dense-twin"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe
