// Rank-local experts and sharded checkpoints, in one process: a model holding a block of the
// routed experts allocates, initialises and updates only those, and the shards written by models
// holding complementary blocks form one Hugging Face sharded checkpoint that loads whole.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/train_model.h"

namespace moe {
namespace {

// Two layers, the second MoE: 4 experts of width F 6 over D 8, so one expert's three matrices
// hold 3 * 6 * 8 = 144 floats (a multiple of the arena's 16-float alignment).
ModelConfig shard_config() {
  ModelConfig c;
  config_parse(&c, R"({"model_type": "moe_cpp", "vocab_size": 11, "hidden_size": 8,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
    "intermediate_size": 10, "moe_intermediate_size": 6, "num_experts": 4,
    "num_experts_per_tok": 2, "mlp_only_layers": [0], "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "router": {}})", "shard test");
  return c;
}
constexpr int64_t kExpertFloats = 144;

// Every tensor `part` holds has the values of the same tensor of `whole`.
void expect_held_equal(const TrainModel& part, const TrainModel& whole) {
  for (size_t i = 0; i < part.specs.size(); ++i) {
    if (!part.held[i]) continue;
    const int64_t j = train_model_find(whole, part.specs[i].name);
    ASSERT_GE(j, 0);
    int64_t n = 1;
    for (int64_t d : part.specs[i].shape) n *= d;
    for (int64_t k = 0; k < n; ++k)
      ASSERT_EQ(part.params[part.offset[i] + k], whole.params[whole.offset[j] + k])
          << part.specs[i].name << " [" << k << "]";
  }
}

TEST(RankLocalExperts, HoldsOnlyItsBlock) {
  const ModelConfig c = shard_config();
  TrainModel whole, part;
  train_model_alloc(&whole, c);
  train_model_alloc(&part, c, false, 1, 3);
  EXPECT_EQ(part.params.size() + 2 * kExpertFloats, whole.params.size());
  EXPECT_EQ(part.grads.size(), part.params.size());
  train_model_init_weights(&whole, 3, 0.5f);
  train_model_init_weights(&part, 3, 0.5f);
  expect_held_equal(part, whole);
  const LayerWeights& lw = part.w.layers[1];
  EXPECT_EQ(lw.experts[0].gate, nullptr);
  EXPECT_EQ(lw.experts[3].down, nullptr);
  ASSERT_NE(lw.experts[1].gate, nullptr);
  ASSERT_NE(part.g.layers[1].experts[2].up, nullptr);
  // The replicated tensors come first in the arena, the held experts after them.
  EXPECT_EQ(static_cast<int64_t>(part.params.size()) - part.n_shared, 2 * kExpertFloats);
  AdamW ow, op;
  adamw_init(&ow, whole, AdamWParams());
  adamw_init(&op, part, AdamWParams());
  EXPECT_EQ(op.m.size() + 2 * kExpertFloats, ow.m.size());
  // The gradient norm counts the held tensors: every parameter of the whole model but two
  // experts' (gradients of 1 everywhere, arena padding included).
  std::fill(part.grads.begin(), part.grads.end(), 1.0f);
  double want = -2.0 * kExpertFloats;
  for (const TensorSpec& s : whole.specs) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    want += static_cast<double>(n);
  }
  const double norm = grad_clip(&part, 0.0f);
  EXPECT_NEAR(norm * norm, want, want * 1e-12);
  adamw_step(&op, &part, 1e-3f);  // touches only what is held (ASan would see the rest)
}

TEST(ShardedCheckpoint, ShardsOfComplementaryBlocksLoadWhole) {
  const ModelConfig c = shard_config();
  const std::string dir = moe_test::make_temp_dir("sharded_export");
  TrainModel whole, a, b;
  train_model_alloc(&whole, c);
  train_model_alloc(&a, c, false, 0, 2);
  train_model_alloc(&b, c, false, 2, 4);
  for (TrainModel* m : {&whole, &a, &b}) train_model_init_weights(m, 5, 0.3f);
  ShardRole ra, rb;
  ra.shard = 0, rb.shard = 1;
  ra.n_shards = rb.n_shards = 2;
  export_model(a, dir, "", ra);
  export_model(b, dir, "", rb);
  EXPECT_TRUE(file_exists(dir + "/model-00001-of-00002.safetensors"));
  EXPECT_TRUE(file_exists(dir + "/model-00002-of-00002.safetensors"));
  EXPECT_TRUE(file_exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(dir + "/model.safetensors"));
  // Shard 2 holds experts 2 and 3 only; shard 1 the rest.
  StArchive s2;
  st_open_file(&s2, dir + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(s2.tensors.size(), 6u);
  EXPECT_NE(s2.find("model.layers.1.mlp.experts.3.down_proj.weight"), nullptr);
  // One process loads the whole model from the index, as the inference engine does.
  TrainModel loaded;
  train_model_alloc(&loaded, c);
  StArchive ar;
  st_open_dir(&ar, dir);
  train_model_load_weights(&loaded, ar);
  expect_held_equal(loaded, whole);
  Model m;
  model_load(&m, dir);
  EXPECT_NE(m.layers[1].experts[3].down, nullptr);
  // A later one-process export into the same folder replaces the shards.
  export_model(whole, dir, "");
  EXPECT_TRUE(file_exists(dir + "/model.safetensors"));
  EXPECT_FALSE(file_exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(dir + "/model-00001-of-00002.safetensors"));
}

}  // namespace
}  // namespace moe
