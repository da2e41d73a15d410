// config.json parsing: architecture flags, aliases, rope merging, and errors naming the field.
#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"

namespace moe {
namespace {

const char* kMixtral = R"({"model_type": "mixtral", "vocab_size": 256, "hidden_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 32, "num_local_experts": 8, "num_experts_per_tok": 2})";

std::string error_of(const std::string& text) {
  ModelConfig c;
  try {
    config_parse(&c, text, "dir/config.json");
  } catch (const MoeError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, MixtralDefaults) {
  ModelConfig c;
  config_parse(&c, kMixtral, "config.json");
  EXPECT_EQ(c.arch, ARCH_MIXTRAL);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope.theta, 1e6);  // Mixtral's class default
  EXPECT_TRUE(c.router.norm_topk);
  EXPECT_EQ(c.n_moe_layers(), 2);
  EXPECT_FLOAT_EQ(c.attn_scale, 0.25f);
}

TEST(Config, UnsupportedModelTypeListsSupported) {
  std::string e = error_of(R"({"model_type": "llama"})");
  EXPECT_NE(e.find("dir/config.json"), std::string::npos);
  EXPECT_NE(e.find("model_type"), std::string::npos);
  EXPECT_NE(e.find("deepseek_v3"), std::string::npos);
  EXPECT_NE(e.find("gpt_oss"), std::string::npos);
}

TEST(Config, MalformedJson) {
  std::string e = error_of("{\"model_type\": ");
  EXPECT_NE(e.find("dir/config.json: malformed JSON"), std::string::npos);
}

TEST(Config, ErrorsNameTheField) {
  std::string s = kMixtral;
  EXPECT_NE(error_of(s.replace(s.find("\"hidden_size\": 64"), 17, "\"hidden_size\": -1"))
                .find("'hidden_size'"),
            std::string::npos);
  s = kMixtral;
  EXPECT_NE(
      error_of(s.replace(s.find("\"num_experts_per_tok\": 2"), 24, "\"num_experts_per_tok\": 9"))
          .find("'num_experts_per_tok'"),
      std::string::npos);
  s = kMixtral;
  EXPECT_NE(
      error_of(s.replace(s.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3"))
          .find("'num_key_value_heads'"),
      std::string::npos);
}

// Sizes a config alone could use to exhaust memory or time (found by fuzzing: 1e8 layers asked
// for 90 GB, hidden_size 2^30 took 97 s) are rejected naming the field; so is a number beyond
// double.
TEST(Config, AbsurdSizesAreRejected) {
  auto with = [](const std::string& from, const std::string& to, std::string s = kMixtral) {
    return s.replace(s.find(from), from.size(), to);
  };
  EXPECT_EQ(error_of(with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 100000000")),
            "dir/config.json: field 'num_hidden_layers': is too large (over 1048576)");
  EXPECT_EQ(error_of(with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 20000")),
            "dir/config.json: field 'num_hidden_layers': is too large (over 16384)");
  EXPECT_EQ(error_of(with("\"hidden_size\": 64", "\"hidden_size\": 1073741824")),
            "dir/config.json: field 'hidden_size': is too large (over 1048576)");
  EXPECT_EQ(error_of(with("\"num_local_experts\": 8", "\"num_local_experts\": 2048",
                          with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1024"))),
            "dir/config.json: field 'num_local_experts': too many experts for the number of "
            "layers (over 2^20 expert FFNs)");
  EXPECT_EQ(error_of(with("\"num_local_experts\": 8", "\"num_local_experts\": 1024",
                          with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1024"))),
            "");  // exactly 2^20 expert FFNs
  EXPECT_EQ(error_of(with("\"vocab_size\": 256", "\"vocab_size\": 1e400")),
            "dir/config.json: malformed JSON: a number is out of range");
}

TEST(Config, LegacyAndV5RopeKeysAgree) {
  std::string base = R"({"model_type": "qwen3_moe", "vocab_size": 256, "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "moe_intermediate_size": 32, "num_local_experts": 8, "num_experts_per_tok": 2,
    "max_position_embeddings": 256, )";
  ModelConfig a, b;
  config_parse(&a, base + R"("rope_theta": 5000.0, "rope_scaling": {"type": "yarn", "factor": 4.0,
      "original_max_position_embeddings": 64}})",
               "a");
  config_parse(&b, base + R"("rope_parameters": {"rope_theta": 5000.0, "rope_type": "yarn",
      "factor": 4.0, "original_max_position_embeddings": 64}})",
               "b");
  EXPECT_EQ(a.rope.type, "yarn");
  ASSERT_EQ(a.rope.inv_freq.size(), b.rope.inv_freq.size());
  for (size_t i = 0; i < a.rope.inv_freq.size(); ++i)
    EXPECT_EQ(a.rope.inv_freq[i], b.rope.inv_freq[i]);
  EXPECT_NEAR(a.rope.attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-12);
}

TEST(Config, YarnRampByHand) {
  // dim 16, theta 10000, factor 4, orig 64, beta 32/1, truncate: lo = floor(corr(32)), hi =
  // ceil(corr(1)).
  std::string text = R"({"model_type": "olmoe", "vocab_size": 16, "hidden_size": 64,
    "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8, "num_experts": 4,
    "num_experts_per_tok": 1, "max_position_embeddings": 256,
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
      "original_max_position_embeddings": 64}})";
  ModelConfig c;
  config_parse(&c, text, "c");
  const int d = 16;
  auto corr = [&](double r) { return d * std::log(64 / (r * 2 * M_PI)) / (2 * std::log(10000.0)); };
  double lo = std::max(std::floor(corr(32)), 0.0), hi = std::min(std::ceil(corr(1)), d - 1.0);
  for (int i = 0; i < d / 2; ++i) {
    double inv = 1.0 / std::pow(10000.0, 2.0 * i / d);
    double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
    double want = inv / 4.0 * ramp + inv * (1 - ramp);
    EXPECT_NEAR(c.rope.inv_freq[i], want, 1e-6 * want) << i;
  }
}

TEST(Config, DeepSeekV3Routing) {
  std::string text = R"({"model_type": "deepseek_v3", "vocab_size": 256, "hidden_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
    "intermediate_size": 96, "moe_intermediate_size": 32, "n_routed_experts": 8,
    "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
    "q_lora_rank": null, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
    "v_head_dim": 16, "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
      "mscale": 1.0, "mscale_all_dim": 1.0}, "max_position_embeddings": 256})";
  ModelConfig c;
  config_parse(&c, text, "c");
  EXPECT_TRUE(c.mla);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.router.score, SCORE_SIGMOID);
  EXPECT_EQ(c.router.group, GROUP_TOP2_SUM);
  EXPECT_TRUE(c.router.norm_topk);
  EXPECT_FLOAT_EQ(c.router.scale, 2.5f);
  EXPECT_EQ(c.shared_ffn, 32);
  EXPECT_EQ(c.is_moe[0], 0);
  EXPECT_EQ(c.is_moe[1], 1);
  EXPECT_EQ(c.rope.layout, ROPE_INTERLEAVED);
  double m = 0.1 * std::log(4.0) + 1.0;
  EXPECT_NEAR(c.attn_scale, std::pow(24.0, -0.5) * m * m, 1e-7);
  EXPECT_NEAR(c.rope.attention_factor, 1.0, 1e-12);
  // group of one expert is rejected
  std::string bad = text;
  bad.replace(bad.find("\"n_group\": 4"), 12, "\"n_group\": 8");
  EXPECT_NE(error_of(bad).find("'n_group'"), std::string::npos);
}

TEST(Config, GptOssLayerTypesAndDefaults) {
  std::string text = R"({"model_type": "gpt_oss", "vocab_size": 256, "hidden_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "intermediate_size": 32, "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": 4,
    "layer_types": ["full_attention", "sliding_attention", "full_attention"]})";
  ModelConfig c;
  config_parse(&c, text, "c");
  EXPECT_EQ(c.window, (std::vector<int>{0, 4, 0}));
  EXPECT_EQ(c.rope.type, "yarn");  // gpt-oss's default rope
  EXPECT_NEAR(c.rope.attention_factor, 0.1 * std::log(32.0) + 1.0, 1e-9);
  EXPECT_TRUE(c.router.topk_then_softmax);
  EXPECT_TRUE(c.sinks);
  EXPECT_TRUE(c.qkv_bias && c.o_bias);
}

TEST(Config, Qwen2SparseStepAndMlpOnly) {
  std::string text = R"({"model_type": "qwen2_moe", "vocab_size": 256, "hidden_size": 64,
    "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 96,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "num_experts": 8,
    "num_experts_per_tok": 2, "decoder_sparse_step": 2, "mlp_only_layers": [3]})";
  ModelConfig c;
  config_parse(&c, text, "c");
  EXPECT_EQ(c.is_moe, (std::vector<char>{0, 1, 0, 0}));
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.shared_gate);
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

ModelConfig parse(const std::string& text) {
  ModelConfig c;
  config_parse(&c, text, "c");
  return c;
}

// config_to_json picks the HF architecture that expresses a config exactly, else moe_cpp, and
// reading what it wrote gives the same configuration back.
TEST(Config, WriterRoundTripsAndPicksStandardArchitectures) {
  ModelConfig base = parse(R"({"model_type": "qwen3_moe", "vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "intermediate_size": 48, "moe_intermediate_size": 16, "num_experts": 8,
    "num_experts_per_tok": 2, "norm_topk_prob": true, "mlp_only_layers": [0]})");
  auto round = [](ModelConfig c) {
    std::string text = config_to_json(&c);
    ModelConfig back;
    config_parse(&back, text, "written");
    EXPECT_EQ(back.arch, c.arch);
    EXPECT_EQ(back.is_moe, c.is_moe);
    EXPECT_EQ(back.qk_norm, c.qk_norm);
    EXPECT_EQ(back.qkv_bias, c.qkv_bias);
    EXPECT_EQ(back.shared_ffn, c.shared_ffn);
    EXPECT_EQ(back.shared_gate, c.shared_gate);
    EXPECT_EQ(back.router.kind, c.router.kind);
    EXPECT_EQ(back.router.score, c.router.score);
    EXPECT_EQ(back.router.norm_topk, c.router.norm_topk);
    EXPECT_EQ(back.router.has_correction_bias, c.router.has_correction_bias);
    EXPECT_EQ(back.router.group, c.router.group);
    EXPECT_EQ(back.router.scale, c.router.scale);
    EXPECT_EQ(back.n_experts, c.n_experts);
    EXPECT_EQ(back.expert_ffn, c.expert_ffn);
    return back.arch;
  };
  EXPECT_EQ(round(base), ARCH_QWEN3_MOE);
  ModelConfig c = base;
  c.shared_ffn = 24;  // shared expert with qk norm: no standard architecture
  EXPECT_EQ(round(c), ARCH_MOE_CPP);
  c.shared_gate = true;
  c.qk_norm = QKNORM_NONE;
  c.qkv_bias = true;
  EXPECT_EQ(round(c), ARCH_QWEN2_MOE);
  c = base;
  c.router.score = SCORE_SIGMOID;
  c.router.has_correction_bias = true;
  c.router.group = GROUP_TOP2_SUM;
  c.router.n_group = 4;
  c.router.topk_group = 2;
  c.router.scale = 2.5f;
  EXPECT_EQ(round(c), ARCH_MOE_CPP);
  c = base;
  c.router.kind = ROUTER_EXPERT_CHOICE;
  EXPECT_EQ(round(c), ARCH_MOE_CPP);
  c = base;
  c.qk_norm = QKNORM_NONE;
  c.is_moe.assign(3, 1);
  EXPECT_EQ(round(c), ARCH_MIXTRAL);
}

TEST(Config, MoeCppRouterErrorsNameTheField) {
  std::string e;
  try {
    parse(R"({"model_type": "moe_cpp", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1,
      "num_attention_heads": 4, "moe_intermediate_size": 16, "num_experts": 8,
      "num_experts_per_tok": 2, "router": {"kind": "telepathy"}})");
  } catch (const MoeError& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("router.kind"), std::string::npos) << e;
  EXPECT_NE(e.find("telepathy"), std::string::npos) << e;
}

}  // namespace
}  // namespace moe
