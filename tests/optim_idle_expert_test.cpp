// AdamW and routed experts that receive no token in a step: they are skipped (no moment update,
// no weight decay), as PyTorch's AdamW skips a parameter whose gradient is None, and their bias
// correction counts only their own updates; a checkpoint keeps those counts.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/trainer.h"

namespace moe {
namespace {

bool is_expert(const TensorSpec& s, int layer, int e) {
  return s.name.rfind("model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + ".", 0) == 0;
}

TEST(OptimIdleExperts, SkippedUntilTheyReceiveTokensThenAFirstStep) {
  TrainArgs a;
  a.layers = 2, a.d_model = 16, a.heads = 2, a.experts = 4, a.top_k = 2, a.expert_ffn = 8;
  TrainModel tm;
  train_model_alloc(&tm, train_model_config(a, 40, 0));
  train_model_init_weights(&tm, 3, 0.02f);
  AdamW opt;
  adamw_init(&opt, tm, AdamWParams());
  const float lr = 1e-2f;
  // Expert 2 of layer 0 receives no token in steps 1-3 (zero gradient), then tokens in step 4.
  std::vector<std::vector<int64_t>> received = {{5, 3, 0, 1}, {1, 1, 1, 1}};
  std::vector<float> before;
  for (int step = 1; step <= 4; ++step) {
    if (step == 4) received[0][2] = 2;
    for (size_t i = 0; i < tm.specs.size(); ++i) {
      int64_t n = 1;
      for (int64_t d : tm.specs[i].shape) n *= d;
      const bool idle = step < 4 && is_expert(tm.specs[i], 0, 2);
      for (int64_t j = 0; j < n; ++j)
        tm.grads[tm.offset[i] + j] = idle ? 0.0f : (j % 2 ? 0.5f : -0.25f);
    }
    before = tm.params;
    adamw_step(&opt, &tm, lr, &received);
    for (size_t i = 0; i < tm.specs.size(); ++i) {
      if (!is_expert(tm.specs[i], 0, 2) && !is_expert(tm.specs[i], 0, 1)) continue;
      const float* m = opt.m.data() + opt.state_off[i];
      const int64_t k = tm.offset[i] + 1;  // an element with gradient +0.5
      const float decayed = before[k] * (1.0f - lr * 0.1f);
      if (is_expert(tm.specs[i], 0, 2) && step < 4) {
        EXPECT_EQ(tm.params[k], before[k]) << tm.specs[i].name << " step " << step;
        EXPECT_EQ(m[1], 0.0f);
      } else if (is_expert(tm.specs[i], 0, 2)) {
        // Its first update: m^ = g, v^ = g^2, so the step is lr (PyTorch's per-parameter step 1;
        // with the global step 4 it would be 0.56 lr).
        EXPECT_NEAR(decayed - tm.params[k], lr, 1e-6) << tm.specs[i].name;
      } else {
        EXPECT_NE(tm.params[k], before[k]);
      }
    }
  }
  EXPECT_EQ(opt.step, 4);
  EXPECT_EQ(opt.expert_step, (std::vector<int64_t>{4, 4, 1, 4, 4, 4, 4, 4}));
  // The counts survive a checkpoint.
  const std::string dir = moe_test::make_temp_dir("idle_ckpt") + "/checkpoint";
  checkpoint_save(tm, opt, 4, 1, dir, "");
  AdamW back;
  adamw_init(&back, tm, AdamWParams());
  uint64_t seed = 0;
  checkpoint_load(&tm, &back, dir, &seed);
  EXPECT_EQ(back.expert_step, opt.expert_step);
}

}  // namespace
}  // namespace moe
