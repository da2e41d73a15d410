// `moe bench layer|decode|prefill` through the CLI on tiny models with --quick (tiny machine
// probes and timing): they run, validate, and write reports with the expected fields; bad flags
// give one-line errors. Speed itself is never tested.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

void expect_one_line_error(const moe_test::RunResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.rfind("moe: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

// A small Qwen2-MoE layer: shared expert with its sigmoid gate, 8 experts, top-2.
const char* kTinyConfig = R"({
  "model_type": "qwen2_moe",
  "hidden_size": 64,
  "intermediate_size": 96,
  "moe_intermediate_size": 32,
  "shared_expert_intermediate_size": 64,
  "num_experts": 8,
  "num_experts_per_tok": 2,
  "norm_topk_prob": false,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "vocab_size": 128,
  "max_position_embeddings": 128,
  "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false
})";

std::string write_tiny_config(const std::string& dir) {
  const std::string path = dir + "/tiny.json";
  std::ofstream(path) << kTinyConfig;
  return path;
}

json read_json(const std::string& path) {
  const std::string text = moe_test::slurp(path);
  EXPECT_FALSE(text.empty()) << path;
  return json::parse(text);
}

void expect_machine_fields(const json& m) {
  for (const char* k : {"cpu", "cpus", "threads", "llc_bytes", "mem_total", "kernels", "date",
                        "load_start", "load_end"})
    EXPECT_TRUE(m.contains(k)) << k;
  EXPECT_GE(m["threads"].get<int>(), 1);
}

TEST(BenchCli, LayerRunsValidatesAndReports) {
  const std::string dir = moe_test::make_temp_dir("bench_layer");
  const std::string cfg = write_tiny_config(dir);
  for (const char* type : {"f32", "bf16", "q8_0", "q4_0"}) {
    const std::string out = dir + "/layer_" + type + ".md";
    const auto r = moe_test::run_moe(std::string("bench layer --config ") + cfg + " --type " + type +
                                     " --tokens 1,3,20 --threads 1 --quick --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("| T | weights |"), std::string::npos) << r.out;
    EXPECT_NE(moe_test::slurp(out).find("# MoE layer: tiny, "), std::string::npos);
    const json j = read_json(dir + "/layer_" + type + ".json");
    EXPECT_EQ(j["bench"], "layer");
    EXPECT_EQ(j["model"], "tiny");
    EXPECT_EQ(j["type"], type);
    EXPECT_TRUE(j["quick"].get<bool>());
    const json& L = j["layer"];
    EXPECT_EQ(L["hidden"], 64);
    EXPECT_EQ(L["expert_ffn"], 32);
    EXPECT_EQ(L["experts"], 8);
    EXPECT_EQ(L["top_k"], 2);
    EXPECT_EQ(L["shared_ffn"], 64);
    EXPECT_TRUE(L["shared_gate"].get<bool>());
    EXPECT_EQ(L["layer_bytes"].get<int64_t>(),
              8 * L["expert_bytes"].get<int64_t>() + L["dense_bytes"].get<int64_t>());
    expect_machine_fields(j["machine"]);
    EXPECT_GT(j["machine"]["dram_read_gbps"].get<double>(), 0.0);
    EXPECT_GT(j["machine"]["sgemm_gflops"].get<double>(), 0.0);

    // Validation: the dot path always, the sgemm path for raw experts; all within tolerance.
    const json& v = j["validation"];
    const bool raw = std::string(type) != "f32", block = type[0] == 'q';
    ASSERT_EQ(v.size(), raw ? 2u : 1u) << v.dump();
    for (const json& c : v) {
      EXPECT_TRUE(c["ok"].get<bool>()) << c.dump();
      EXPECT_TRUE(c["routing_checked"].get<bool>());
      EXPECT_LE(c["rel_err"].get<double>(), c["tol"].get<double>());
      EXPECT_EQ(c.contains("rel_err_q8act"), block && c["path"] == "dot") << c.dump();
    }
    EXPECT_EQ(v[0]["path"], "dot");
    if (!block) {
      EXPECT_LT(v[0]["rel_err"].get<double>(), 1e-5);
    }

    // Cases: each token count, cold then warm.
    const json& cs = j["cases"];
    ASSERT_EQ(cs.size(), 6u);
    const int tokens[] = {1, 3, 20};
    for (size_t i = 0; i < cs.size(); ++i) {
      const json& c = cs[i];
      EXPECT_EQ(c["tokens"], tokens[i / 2]);
      EXPECT_EQ(c["weights"], i % 2 == 0 ? "cold" : "warm");
      EXPECT_GT(c["us_median"].get<double>(), 0.0);
      EXPECT_LE(c["us_min"].get<double>(), c["us_median"].get<double>());
      EXPECT_GE(c["reps"].get<int>(), 2);
      const int touched = c["experts_touched"];
      EXPECT_GE(touched, 1);
      EXPECT_LE(touched, std::min(8, 2 * tokens[i / 2]));
      EXPECT_EQ(c["bytes"].get<int64_t>(),
                L["dense_bytes"].get<int64_t>() + touched * L["expert_bytes"].get<int64_t>());
      // flops = 2 T K 3 D F + 2 T 3 D Fs + 2 T D E + 2 T D
      const double T = tokens[i / 2];
      EXPECT_DOUBLE_EQ(c["flops"].get<double>(),
                       2 * T * 2 * 3 * 64 * 32 + 2 * T * 3 * 64 * 64 + 2 * T * 64 * 8 + 2 * T * 64);
      EXPECT_EQ(c["dot_experts"].get<int>() > 0, raw) << c.dump();
      EXPECT_GE(c["slots"].get<int>(), 1);
      if (c["weights"] == "cold") {
        EXPECT_GT(c["slots"].get<int>(), 1);  // --quick: 8 MiB of copies
        EXPECT_GE(c["reuse_bytes"].get<int64_t>(), 8 << 20);
      }
      for (const char* k : {"gflops", "gbps", "frac_dram", "frac_sgemm", "frac_roofline"})
        EXPECT_GT(c[k].get<double>(), 0.0) << k;
    }
  }
  fs::remove_all(dir);
}

// Architectures with router biases, expert biases and gpt-oss's activation (gpt_oss), sigmoid
// scores with a correction bias and groups (deepseek_v3), and an expert width that is not a
// multiple of 32 (mixtral_fused: its down matrices stay fp32 under q4_0).
TEST(BenchCli, LayerValidatesOtherArchitectures) {
  const std::string dir = moe_test::make_temp_dir("bench_layer_arch");
  for (const char* fixture : {"gpt_oss_base", "deepseek_v3_base", "mixtral_fused_swa_tied_bf16"}) {
    for (const char* type : {"bf16", "q4_0"}) {
      const std::string out = dir + "/" + fixture + "_" + type + ".md";
      const auto r = moe_test::run_moe(std::string("bench layer --config ") +
                                       moe_test::fixture_path(fixture) + "/config.json --type " +
                                       type + " --tokens 2 --warm --threads 2 --quick --out " + out);
      ASSERT_EQ(r.exit_code, 0) << fixture << " " << type << ": " << r.err;
      const json j = read_json(dir + "/" + fixture + "_" + type + ".json");
      EXPECT_EQ(j["model"], fixture);  // config.json: named after its folder
      for (const json& c : j["validation"]) EXPECT_TRUE(c["ok"].get<bool>()) << c.dump();
      ASSERT_EQ(j["cases"].size(), 1u);
      EXPECT_EQ(j["cases"][0]["weights"], "warm");
    }
  }
  fs::remove_all(dir);
}

TEST(BenchCli, LayerBadArgumentsGiveOneLineErrors) {
  const std::string dir = moe_test::make_temp_dir("bench_layer_bad");
  const std::string cfg = write_tiny_config(dir);
  const std::string out = " --quick --out " + dir + "/r.md";
  expect_one_line_error(moe_test::run_moe("bench layer --config " + cfg + " --type q5_0" + out),
                        "--type");
  expect_one_line_error(moe_test::run_moe("bench layer --type q4_0" + out), "--config");
  expect_one_line_error(moe_test::run_moe("bench layer --config " + dir + "/none.json --type q4_0" + out),
                        "--config");
  expect_one_line_error(moe_test::run_moe("bench layer --config " + cfg + out), "--type");
  for (const char* bad : {"1,x", "1,,8", "0", "-3", "''", "8,1e3"})
    expect_one_line_error(
        moe_test::run_moe("bench layer --config " + cfg + " --type q8_0 --tokens " + bad + out),
        "--tokens");
  expect_one_line_error(moe_test::run_moe("bench"), "subcommand");
  expect_one_line_error(moe_test::run_moe("bench decode --model " + dir + "/none" + out), "--model");
  expect_one_line_error(
      moe_test::run_moe("bench prefill --model " + moe_test::fixture_path("olmoe_base") +
                        " --tokens 0" + out),
      "--tokens");
  EXPECT_FALSE(fs::exists(dir + "/r.md"));
  EXPECT_FALSE(fs::exists(dir + "/r.json"));
  fs::remove_all(dir);
}

// Decode and prefill on tiny checkpoints. For fp32 checkpoints the engine holds every tensor as
// stored, so the two byte counts (one from the bound weights, one from the file's tensors) must
// agree; a q4_0 checkpoint's engine bytes exceed its stored bytes (attention is dequantized to
// fp32 at load).
TEST(BenchCli, DecodeAndPrefillReport) {
  const std::string dir = moe_test::make_temp_dir("bench_decode");
  for (const char* fixture : {"olmoe_base", "qwen2_moe_shared", "deepseek_v2_lite", "gpt_oss_base"}) {
    const std::string model = moe_test::fixture_path(fixture);
    const std::string out = dir + "/decode_" + fixture;
    auto r = moe_test::run_moe("bench decode --model " + model +
                               " --tokens 5 --threads 1 --quick --out " + out + ".md");
    ASSERT_EQ(r.exit_code, 0) << fixture << ": " << r.err;
    EXPECT_NE(r.out.find("decode: "), std::string::npos) << r.out;
    const json j = read_json(out + ".json");
    EXPECT_EQ(j["bench"], "decode");
    EXPECT_EQ(j["tokens"], 5);
    expect_machine_fields(j["machine"]);
    EXPECT_TRUE(j["model"]["fits_in_memory"].get<bool>());
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(j["limit_tokens_per_s"].get<double>(), 0.0);
    const json& b = j["bytes_per_token"];
    const json& s = j["bytes_per_token_stored"];
    EXPECT_GT(b["experts"].get<double>(), 0.0);
    EXPECT_GT(b["kv_cache"].get<double>(), 0.0);
    EXPECT_NEAR(b["total"].get<double>(), s["total"].get<double>(), 1e-9 * b["total"].get<double>())
        << fixture << "\n" << b.dump() << "\n" << s.dump();
    for (const char* k : {"attention", "dense_ffn", "router", "shared", "experts", "lm_head", "embed"})
      EXPECT_NEAR(b[k].get<double>(), s[k].get<double>(), 1e-6 * b["total"].get<double>())
          << fixture << " " << k;
    const int K = std::string(fixture) == "deepseek_v2_lite" ? 3 : 2;
    EXPECT_DOUBLE_EQ(j["experts_per_moe_layer"].get<double>(), K) << fixture;

    r = moe_test::run_moe("bench prefill --model " + model + " --tokens 16 --reps 1 --quick --out " +
                          dir + "/prefill_" + fixture + ".md");
    ASSERT_EQ(r.exit_code, 0) << fixture << ": " << r.err;
    const json p = read_json(dir + "/prefill_" + fixture + ".json");
    EXPECT_EQ(p["bench"], "prefill");
    EXPECT_EQ(p["tokens"], 16);
    EXPECT_EQ(p["reps"], 1);
    EXPECT_GT(p["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(p["flops"].get<double>(), 0.0);
    EXPECT_GT(p["machine"]["sgemm_gflops"].get<double>(), 0.0);
  }

  const std::string q4 = dir + "/olmoe_q4";
  auto r = moe_test::run_moe("init --config " + moe_test::fixture_path("olmoe_base") +
                             "/config.json --random --type q4_0 --out " + q4);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = moe_test::run_moe("bench decode --model " + q4 + " --tokens 3 --quick --out " + dir + "/q4.md");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = read_json(dir + "/q4.json");
  EXPECT_EQ(j["model"]["quant_type"], "q4_0");
  const json& b = j["bytes_per_token"];
  const json& s = j["bytes_per_token_stored"];
  // Quantized attention matrices are run as stored, not held as fp32 copies.
  EXPECT_DOUBLE_EQ(b["attention"].get<double>(), s["attention"].get<double>());
  EXPECT_DOUBLE_EQ(b["experts"].get<double>(), s["experts"].get<double>());
  EXPECT_DOUBLE_EQ(b["lm_head"].get<double>(), s["lm_head"].get<double>());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
