// The trainable model: gradients of every parameter against finite differences, and its forward
// against the inference engine's forward on the same weights.
#include "train/train_model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "infer/forward.h"

namespace moe {
namespace {

ModelConfig tiny_config(QKNorm qk, bool tie, bool sigmoid, int shared, bool gate) {
  std::string text = R"({"model_type": "moe_cpp", "vocab_size": 11, "hidden_size": 8,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
    "intermediate_size": 10, "moe_intermediate_size": 6, "num_experts": 4,
    "num_experts_per_tok": 2, "mlp_only_layers": [0], "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "router": {}})";
  ModelConfig c;
  config_parse(&c, text, "tiny");
  c.qk_norm = qk;
  c.tie_embeddings = tie;
  if (sigmoid) {
    c.router.score = SCORE_SIGMOID;
    c.router.has_correction_bias = true;
    c.router.norm_topk = true;
    c.router.norm_eps = 1e-20f;
  }
  c.shared_ffn = shared;
  c.shared_gate = gate;
  return c;
}

struct Fixture {
  TrainModel tm;
  TrainActs acts;
  Fixture(const ModelConfig& c, const MoeLossSpec& ls) {
    train_model_alloc(&tm, c);
    train_model_init_weights(&tm, 3, 0.5f);
    // non-trivial norms and biases
    for (size_t i = 0; i < tm.specs.size(); ++i)
      if (tm.specs[i].shape.size() == 1)
        for (int64_t j = 0; j < tm.specs[i].shape[0]; ++j)
          tm.params[tm.offset[i] + j] += static_cast<float>(0.2 * rng_normal(77 + i, j));
    tm.losses = ls;
    train_acts_init(&acts, tm, 2, 4);
    const int32_t ids[8] = {1, 5, 2, 9, 3, 3, 7, 0};
    for (int t = 0; t < 8; ++t) {
      acts.ids[t] = ids[t];
      acts.targets[t] = t % 4 == 3 ? -1 : ids[(t + 1) % 8];
    }
  }
  double loss() { return train_forward(&tm, &acts, 1, true).total(); }
  std::vector<int32_t> routing() {
    std::vector<int32_t> r;
    for (const LayerActs& la : acts.layers)
      r.insert(r.end(), la.moe.routing.expert.begin(), la.moe.routing.expert.begin() + la.moe.routing.A);
    return r;
  }
};

void grad_check(const ModelConfig& c, const MoeLossSpec& ls) {
  Fixture f(c, ls);
  f.loss();
  const std::vector<int32_t> sel = f.routing();
  std::fill(f.tm.grads.begin(), f.tm.grads.end(), 0.0f);
  train_backward(&f.tm, &f.acts, 1.0f);
  const float h = 1e-2f;
  int checked = 0, total = 0;
  for (size_t i = 0; i < f.tm.specs.size(); ++i) {
    if (!f.tm.trainable[i]) continue;
    int64_t n = 1;
    for (int64_t d : f.tm.specs[i].shape) n *= d;
    double mx = 1e-6;
    for (int64_t j = 0; j < n; ++j)
      mx = std::max(mx, std::fabs(static_cast<double>(f.tm.grads[f.tm.offset[i] + j])));
    for (int64_t j = 0; j < n; ++j) {
      float& p = f.tm.params[f.tm.offset[i] + j];
      const float keep = p;
      double v[4];
      const float off[4] = {-2 * h, -h, h, 2 * h};
      bool same = true;
      for (int q = 0; q < 4; ++q) {
        p = keep + off[q];
        v[q] = f.loss();
        same &= f.routing() == sel;
      }
      p = keep;
      ++total;
      if (!same) continue;
      const double fd = (v[0] - 8 * v[1] + 8 * v[2] - v[3]) / (12 * h);
      EXPECT_NEAR(f.tm.grads[f.tm.offset[i] + j], fd, 3e-3 * mx + 2e-6)
          << f.tm.specs[i].name << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, total * 3 / 4);
}

TEST(TrainModelGrad, PerHeadQkNormSoftmaxAuxZ) {
  MoeLossSpec ls;
  ls.aux = 0.05f;
  ls.z = 0.01f;
  grad_check(tiny_config(QKNORM_HEAD, false, false, 0, false), ls);
}

TEST(TrainModelGrad, FullQkNormTiedSharedGated) {
  MoeLossSpec ls;
  ls.aux = 0.05f;
  grad_check(tiny_config(QKNORM_FULL, true, false, 5, true), ls);
}

TEST(TrainModelGrad, NoQkNormSigmoidBiasSeqLoss) {
  MoeLossSpec ls;
  ls.seq_aux = 0.05f;
  grad_check(tiny_config(QKNORM_NONE, false, true, 3, false), ls);
}

// The training forward and the inference engine compute the same logits from the same arena.
TEST(TrainModel, ForwardMatchesInferenceEngine) {
  for (QKNorm qk : {QKNORM_HEAD, QKNORM_FULL, QKNORM_NONE}) {
    Fixture f(tiny_config(qk, qk == QKNORM_FULL, qk == QKNORM_NONE, 3, qk != QKNORM_NONE),
              MoeLossSpec());
    train_forward(&f.tm, &f.acts, 1, false);
    for (int b = 0; b < 2; ++b) {
      InferState st;
      infer_state_init(&st, f.tm.w, 4, 4);
      infer_forward(f.tm.w, &st, f.acts.ids.data() + 4 * b, 4, true);
      for (int i = 0; i < 4 * 11; ++i)
        EXPECT_NEAR(st.logits[i], f.acts.logits[b * 44 + i], 1e-5) << "qk " << qk << " b " << b;
    }
  }
}

}  // namespace
}  // namespace moe
