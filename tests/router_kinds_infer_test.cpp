// Inference of moe_cpp models trained with each router kind (token choice, noisy top-k, expert
// choice, hash, random): a model exported from the trainer and loaded back gives the logits of the
// training forward in eval mode (train = false, dropless), which is the reference; the routing
// capture holds the training forward's experts and weights; fixed-K routers decode token by token
// as one full-sequence call does; expert choice runs at T = 1; hash routing without ids fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "infer/forward.h"
#include "test_util.h"
#include "train/checkpoint.h"

namespace moe {
namespace {

constexpr int kT = 9;  // tokens of the test sequence
const int32_t kIds[kT] = {1, 7, 22, 5, 39, 7, 13, 22, 3};

ModelConfig kind_config(const std::string& kind, int shared) {
  const std::string text =
      R"({"model_type": "moe_cpp", "vocab_size": 40, "hidden_size": 16,
    "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
    "intermediate_size": 20, "moe_intermediate_size": 12, "num_experts": 4,
    "num_experts_per_tok": 2, "mlp_only_layers": [1], "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "eos_token_id": 2, "shared_expert_intermediate_size": )" +
      std::to_string(shared) + R"(, "router": {"kind": ")" + kind +
      R"(", "routed_scaling_factor": 1.5}})";
  ModelConfig c;
  config_parse(&c, text, kind);
  return c;
}

// A randomly initialised trainable model of one router kind, its eval-mode training forward on
// kIds, and the same model exported and loaded by the inference engine.
struct KindModel {
  TrainModel tm;
  TrainActs acts;
  Model m;

  KindModel(const std::string& kind, int shared) {
    train_model_alloc(&tm, kind_config(kind, shared));
    train_model_init_weights(&tm, 11, 0.5f);
    train_acts_init(&acts, tm, 1, kT);
    for (int t = 0; t < kT; ++t) {
      acts.ids[t] = kIds[t];
      acts.targets[t] = t + 1 < kT ? kIds[t + 1] : -1;
    }
    train_forward(&tm, &acts, 0, false);  // the reference: eval mode, capacity factor 0
    const std::string dir = moe_test::make_temp_dir("router_" + kind);
    export_model(tm, dir, "");
    model_load(&m, dir);
  }
  const ModelConfig& cfg() const { return tm.cfg; }
};

// max |a - b| / max |b| over the first n values.
float rel_diff(const float* a, const float* b, int64_t n) {
  float d = 0, mx = 0;
  for (int64_t i = 0; i < n; ++i) {
    d = std::max(d, std::fabs(a[i] - b[i]));
    mx = std::max(mx, std::fabs(b[i]));
  }
  return d / mx;
}

const char* const kKinds[] = {"token_choice", "noisy_topk", "expert_choice", "hash", "random"};

TEST(RouterKindsInfer, FullSequenceLogitsEqualTrainingEval) {
  for (const char* kind : kKinds) {
    for (int shared : {0, 6}) {
      KindModel k(kind, shared);
      ASSERT_EQ(k.m.cfg.router.kind, k.cfg().router.kind) << kind;
      const int V = k.cfg().vocab;
      InferState st;
      infer_state_init(&st, k.m, kT, kT);
      RouteCapture cap;
      st.capture = &cap;
      infer_forward(k.m, &st, kIds, kT, true);
      EXPECT_LT(rel_diff(st.logits.data(), k.acts.logits.data(), int64_t{kT} * V), 1e-5f)
          << kind << " shared " << shared;
      // The capture holds the training forward's routing (fixed K: assignment t*K + k).
      const int K = k.cfg().top_k;
      for (int l = 0; l < k.cfg().n_layers; ++l) {
        if (!k.cfg().is_moe[l]) {
          EXPECT_TRUE(cap.idx[l].empty());
          continue;
        }
        const Routing& r = k.acts.layers[l].moe.routing;
        ASSERT_EQ(cap.idx[l].size(), static_cast<size_t>(kT * K));
        if (k.cfg().router.kind == ROUTER_EXPERT_CHOICE) {
          // Each token's K highest-weight experts, -1 padded.
          for (int t = 0; t < kT; ++t) {
            std::vector<std::pair<float, int32_t>> mine;
            for (int a = 0; a < r.A; ++a)
              if (r.tok[a] == t) mine.push_back({r.w[a], r.expert[a]});
            std::stable_sort(mine.begin(), mine.end(),
                             [](const auto& x, const auto& y) { return x.first > y.first; });
            for (int q = 0; q < K; ++q) {
              const bool has = q < static_cast<int>(mine.size());
              EXPECT_EQ(cap.idx[l][t * K + q], has ? mine[q].second : -1) << kind << " t " << t;
              EXPECT_EQ(cap.w[l][t * K + q], has ? mine[q].first : 0.0f) << kind << " t " << t;
            }
          }
          continue;
        }
        EXPECT_EQ(cap.idx[l], std::vector<int32_t>(r.expert.begin(), r.expert.begin() + kT * K))
            << kind << " layer " << l;
        for (int a = 0; a < kT * K; ++a)
          EXPECT_NEAR(cap.w[l][a], r.w[a], 1e-6f) << kind << " layer " << l << " a " << a;
      }
    }
  }
}

// Routers with a fixed K per token are causal: token-by-token decode gives the full call's logits.
TEST(RouterKindsInfer, FixedKRoutersDecodeAsOneCall) {
  for (const char* kind : {"noisy_topk", "hash", "random"}) {
    KindModel k(kind, 6);
    const int V = k.cfg().vocab;
    InferState st;
    infer_state_init(&st, k.m, 1, kT);
    for (int t = 0; t < kT; ++t) {
      infer_forward(k.m, &st, kIds + t, 1, false);
      EXPECT_LT(rel_diff(st.logits.data(), k.acts.logits.data() + int64_t{t} * V, V), 1e-5f)
          << kind << " t " << t;
    }
  }
}

// Expert choice chooses among the tokens of one call: at T = 1 every expert takes the token.
TEST(RouterKindsInfer, ExpertChoiceDecodesOneToken) {
  KindModel k("expert_choice", 0);
  const int V = k.cfg().vocab, K = k.cfg().top_k;
  InferState st;
  infer_state_init(&st, k.m, 1, kT);
  RouteCapture cap;
  st.capture = &cap;
  for (int t = 0; t < 3; ++t) {
    infer_forward(k.m, &st, kIds + t, 1, false);
    for (int i = 0; i < V; ++i) ASSERT_TRUE(std::isfinite(st.logits[i])) << i;
    EXPECT_EQ(st.ffn.plan.off[k.cfg().n_experts], k.cfg().n_experts);  // E assignments
    for (int q = 0; q < K; ++q) EXPECT_GE(cap.idx[0][q], 0);
    EXPECT_GE(cap.w[0][0], cap.w[0][1]);
  }
}

TEST(RouterKindsInfer, HashRoutingWithoutIdsFails) {
  KindModel k("hash", 0);
  const ModelConfig& c = k.m.cfg;
  FfnScratch s;
  ffn_scratch_init(&s, c, 2);
  std::vector<float> x = moe_test::randn(2 * c.hidden, 3), out(2 * c.hidden);
  try {
    moe_forward(out.data(), c, k.m.layers[0], x.data(), 2, &s, nullptr, 0, 0);
    FAIL() << "no error";
  } catch (const MoeError& e) {
    EXPECT_NE(std::string(e.what()).find("token ids"), std::string::npos) << e.what();
  }
  const int32_t ids[2] = {4, 5};
  moe_forward(out.data(), c, k.m.layers[0], x.data(), 2, &s, ids, 0, 0);
}

// The noisy router's noise projection is loaded with the model (and unused at inference).
TEST(RouterKindsInfer, NoisyRouterLoadsItsNoiseProjection) {
  KindModel k("noisy_topk", 0);
  const LayerWeights& lw = k.m.layers[0];
  ASSERT_NE(lw.router_noise.w, nullptr);
  EXPECT_EQ(lw.router_noise.out, k.cfg().n_experts);
  EXPECT_EQ(lw.router_noise.in, k.cfg().hidden);
  const int64_t n = int64_t{k.cfg().n_experts} * k.cfg().hidden;
  const float* trained = k.tm.w.layers[0].router_noise.w;
  EXPECT_EQ(std::vector<float>(lw.router_noise.w, lw.router_noise.w + n),
            std::vector<float>(trained, trained + n));
}

}  // namespace
}  // namespace moe
