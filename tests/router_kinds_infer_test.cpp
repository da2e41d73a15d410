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
#include "ref_routing.h"
#include "test_util.h"
#include "train/checkpoint.h"

namespace moe {
namespace {

constexpr int kT = 9;  // tokens of the test sequence
const int32_t kIds[kT] = {1, 7, 22, 5, 39, 7, 13, 22, 3};

ModelConfig kind_config(const std::string& kind, int shared, int top_k = 2) {
  const std::string text =
      R"({"model_type": "moe_cpp", "vocab_size": 40, "hidden_size": 16,
    "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
    "intermediate_size": 20, "moe_intermediate_size": 12, "num_experts": 4,
    "num_experts_per_tok": )" + std::to_string(top_k) + R"(, "mlp_only_layers": [1], "rms_norm_eps": 1e-5,
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

  KindModel(const std::string& kind, int shared, int top_k = 2) {
    train_model_alloc(&tm, kind_config(kind, shared, top_k));
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

// sinkhorn and reinforce route by their plain softmax scores at inference (router.h); base needs
// top-1 and has its own test below.
const char* const kKinds[] = {"token_choice", "noisy_topk", "expert_choice", "hash",
                              "random",       "sinkhorn",   "reinforce"};

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
      // The capture and the training forward's routing both equal the routing rule written from
      // its definition (ref_routing.h), applied in double to the MoE input the training forward
      // saved (its FFN norm output) and the layer's router weights.
      const int K = k.cfg().top_k, E = k.cfg().n_experts, D = k.cfg().hidden;
      const RouterSpec& spec = k.cfg().router;
      ASSERT_TRUE(spec.score == SCORE_SOFTMAX && spec.group == GROUP_NONE && !spec.has_bias &&
                  !spec.has_correction_bias && !spec.topk_then_softmax)
          << kind << ": the reference knows plain softmax scores only";
      for (int l = 0; l < k.cfg().n_layers; ++l) {
        if (!k.cfg().is_moe[l]) {
          EXPECT_TRUE(cap.idx[l].empty());
          continue;
        }
        ASSERT_EQ(cap.idx[l].size(), static_cast<size_t>(kT * K));
        const Routing& r = k.acts.layers[l].moe.routing;
        const RouterKind rk = spec.kind;
        const bool learned = rk != ROUTER_HASH && rk != ROUTER_RANDOM;  // has a router matrix
        const std::vector<double> lg =
            learned ? moe_test::ref_router_logits(k.tm.w.layers[l].router.w,
                                                  k.acts.layers[l].xn2.data(), kT, E, D)
                    : std::vector<double>();
        std::vector<moe_test::RefChoice> want(kT);
        std::vector<std::vector<std::pair<int, double>>> train(kT);  // training forward, per token
        for (int a = 0; a < r.A; ++a) train[r.tok[a]].push_back({r.expert[a], r.w[a]});
        if (rk == ROUTER_EXPERT_CHOICE) {
          const auto per_token = moe_test::ref_expert_choice(lg, kT, E, K, 0.0, spec.scale);
          for (int t = 0; t < kT; ++t) {
            std::sort(train[t].begin(), train[t].end());
            ASSERT_EQ(train[t].size(), per_token[t].size()) << kind << " layer " << l << " t " << t;
            for (size_t q = 0; q < train[t].size(); ++q) {
              EXPECT_EQ(train[t][q].first, per_token[t][q].first) << kind << " t " << t;
              EXPECT_NEAR(train[t][q].second, per_token[t][q].second, 1e-5) << kind << " t " << t;
            }
            want[t] = moe_test::ref_top_assignments(per_token[t], K);
          }
        } else if (rk == ROUTER_TOKEN_CHOICE || rk == ROUTER_NOISY_TOPK ||
                   rk == ROUTER_SINKHORN || rk == ROUTER_REINFORCE) {
          for (int t = 0; t < kT; ++t) {
            const double* row = lg.data() + static_cast<size_t>(t) * E;
            want[t] = rk == ROUTER_NOISY_TOPK  // eval mode: no noise
                          ? moe_test::ref_topk_then_softmax(row, E, K, spec.scale)
                          : moe_test::ref_softmax_topk(row, E, K, spec.norm_topk, spec.scale);
            ASSERT_EQ(train[t].size(), static_cast<size_t>(K)) << kind << " t " << t;
            for (int q = 0; q < K; ++q) {
              EXPECT_EQ(r.expert[t * K + q], want[t].expert[q]) << kind << " layer " << l;
              EXPECT_NEAR(r.w[t * K + q], want[t].w[q], 1e-5) << kind << " layer " << l;
            }
          }
        } else {
          // Hash and random routing: K distinct experts per token, each weighted scale / K, the
          // same in training and in the capture; hash routing gives equal token ids equal experts.
          for (int t = 0; t < kT; ++t) {
            want[t].expert.assign(r.expert.begin() + t * K, r.expert.begin() + (t + 1) * K);
            want[t].w.assign(K, static_cast<double>(spec.scale) / K);
            std::vector<int> e = want[t].expert;
            std::sort(e.begin(), e.end());
            EXPECT_EQ(std::unique(e.begin(), e.end()), e.end()) << kind << " t " << t;
            for (int v : e) EXPECT_TRUE(v >= 0 && v < E) << kind << " t " << t;
            for (int u = 0; u < t && rk == ROUTER_HASH; ++u) {
              if (kIds[u] != kIds[t]) continue;
              std::vector<int> f(r.expert.begin() + u * K, r.expert.begin() + (u + 1) * K);
              std::sort(f.begin(), f.end());
              EXPECT_EQ(e, f) << "hash: tokens " << u << " and " << t << " share id " << kIds[t];
            }
          }
        }
        for (int t = 0; t < kT; ++t)
          for (int q = 0; q < K; ++q) {
            EXPECT_EQ(cap.idx[l][t * K + q], want[t].expert[q])
                << kind << " layer " << l << " t " << t;
            EXPECT_NEAR(cap.w[l][t * K + q], want[t].w[q], 1e-5)
                << kind << " layer " << l << " t " << t;
          }
      }
    }
  }
}

// Routers with a fixed K per token are causal: token-by-token decode gives the full call's logits.
TEST(RouterKindsInfer, FixedKRoutersDecodeAsOneCall) {
  for (const char* kind : {"noisy_topk", "hash", "random", "sinkhorn", "reinforce"}) {
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

// BASE at inference: each token's argmax logit, weighted scale * sigmoid(logit); the engine gives
// the training forward's eval-mode logits.
TEST(RouterKindsInfer, BaseRoutesGreedyTop1) {
  KindModel k("base", 6, 1);
  const int V = k.cfg().vocab, E = k.cfg().n_experts, D = k.cfg().hidden;
  InferState st;
  infer_state_init(&st, k.m, kT, kT);
  RouteCapture cap;
  st.capture = &cap;
  infer_forward(k.m, &st, kIds, kT, true);
  EXPECT_LT(rel_diff(st.logits.data(), k.acts.logits.data(), int64_t{kT} * V), 1e-5f);
  for (int l = 0; l < k.cfg().n_layers; ++l) {
    if (!k.cfg().is_moe[l]) continue;
    const std::vector<double> lg = moe_test::ref_router_logits(
        k.tm.w.layers[l].router.w, k.acts.layers[l].xn2.data(), kT, E, D);
    for (int t = 0; t < kT; ++t) {
      const double* row = lg.data() + static_cast<size_t>(t) * E;
      const int best = static_cast<int>(std::max_element(row, row + E) - row);
      EXPECT_EQ(cap.idx[l][t], best) << "layer " << l << " t " << t;
      EXPECT_NEAR(cap.w[l][t], 1.5 / (1.0 + std::exp(-row[best])), 1e-5) << "layer " << l;
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
