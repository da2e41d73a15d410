// `moe quantize --type q4_k|q5_k|q6_k` end to end: a random-weight qwen3_moe at hidden 256 (whole
// super-blocks) is quantized; run raw (the GGUF-type dot kernels) it gives the logits of its own
// dequantized weights, it stays closer to the fp32 model the more bits it keeps, and
// `moe export --gguf` of it loads back to the same logits, with the folder's tokenizer and chat
// template, so `moe generate --prompt` runs on the GGUF alone.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "infer/forward.h"
#include "io/gguf.h"
#include "model/weights.h"
#include "test_util.h"
#include "text/gguf_tokenizer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

const char* kConfig = R"({"model_type": "qwen3_moe", "hidden_size": 256, "num_attention_heads": 2,
  "num_key_value_heads": 1, "head_dim": 128, "num_hidden_layers": 2, "vocab_size": 256,
  "intermediate_size": 256, "moe_intermediate_size": 256, "num_experts": 4,
  "num_experts_per_tok": 2, "norm_topk_prob": true, "mlp_only_layers": [],
  "decoder_sparse_step": 1, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "max_position_embeddings": 64, "tie_word_embeddings": false, "bos_token_id": 1,
  "eos_token_id": 2})";

std::vector<float> logits_of(const std::string& path, bool dequantize) {
  Model m;
  LoadOptions lo;
  lo.dequantize = dequantize;
  model_load(&m, path, lo);
  const std::vector<int32_t> ids = {1, 17, 42, 99, 3, 250};
  InferState st;
  infer_state_init(&st, m, static_cast<int>(ids.size()), static_cast<int>(ids.size()));
  infer_forward(m, &st, ids.data(), static_cast<int>(ids.size()), true);
  return std::vector<float>(st.logits.begin(), st.logits.begin() + ids.size() * m.cfg.vocab);
}

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::fmax(m, std::fabs(x));
  return m;
}

// max |a - b| / max |b|.
float rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0.0f;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::fmax(d, std::fabs(a[i] - b[i]));
  return d / max_abs(b);
}

TEST(KQuantCli, QuantizeRunExport) {
  const std::string root = moe_test::make_temp_dir("cli_kquant");
  std::ofstream(root + "/config.json") << kConfig;
  const std::string f32 = root + "/f32";
  auto r =
      moe_test::run_moe("init --config " + root + "/config.json --random --seed 4 --out " + f32);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {  // a tokenizer for the export: the byte-level one of the qwen3moe GGUF fixture (256 tokens)
    GgufFile g;
    gguf_open(&g, std::string(MOE_FIXTURE_DIR) + "/gguf/qwen3moe.gguf");
    std::ofstream(f32 + "/tokenizer.json") << gguf_tokenizer_json(g);
    std::ofstream(f32 + "/tokenizer_config.json")
        << nlohmann::json{{"chat_template", g.get_str("tokenizer.chat_template")}}.dump();
  }
  const std::vector<float> ref = logits_of(f32, false);
  float prev = 1e30f;
  for (const char* type : {"q4_k", "q5_k", "q6_k"}) {
    const std::string out = root + "/" + type;
    r = moe_test::run_moe(std::string("quantize --in ") + f32 + " --out " + out + " --type " +
                          type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find(std::string("stored as ") + type), std::string::npos) << r.err;
    const std::vector<float> raw = logits_of(out, false), deq = logits_of(out, true);
    // The same weights: only the order of the fp32 additions differs.
    EXPECT_LE(rel_diff(raw, deq), 1e-4f) << type;
    // Against fp32: fewer bits, larger error.
    const float e = rel_diff(raw, ref);
    std::printf("%s: max|dlogit| / max|logit| against f32 = %.4g\n", type, e);
    EXPECT_GT(e, 0.0f) << type;
    EXPECT_LT(e, prev) << type;
    prev = e;
    // The GGUF export carries the blocks as they are.
    const std::string gguf = root + "/" + type + ".gguf";
    r = moe_test::run_moe("export --model " + out + " --gguf " + gguf);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_LE(rel_diff(logits_of(gguf, false), raw), 1e-6f) << type;
    // With the tokenizer and chat template of the folder (quantize copied them).
    GgufFile g;
    gguf_open(&g, gguf);
    EXPECT_EQ(g.get_str("tokenizer.ggml.pre"), "qwen2");
    EXPECT_NE(g.get_str("tokenizer.chat_template").find("<|im_start|>"), std::string::npos);
    r = moe_test::run_moe("generate --model " + gguf + " --prompt hello -n 3 --temperature 0");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  r = moe_test::run_moe("init --config " + root + "/config.json --random --type q6_k --out " +
                        root + "/init_q6");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stored as q6_k"), std::string::npos) << r.err;
  fs::remove_all(root);
}

}  // namespace
}  // namespace moe
