// `moe init` and `moe quantize` through the CLI: init -> inspect -> logits, quantize round trips,
// and bad input giving one-line errors, a non-zero exit and no output folder.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "infer/forward.h"
#include "test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

void expect_one_line_error(const moe_test::RunResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.rfind("moe: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

// No leftover temp folders beside `out`.
void expect_no_temp(const std::string& out) {
  const fs::path p(out);
  for (const auto& e : fs::directory_iterator(p.parent_path()))
    EXPECT_EQ(e.path().filename().string().rfind(p.filename().string() + ".tmp.", 0),
              std::string::npos)
        << e.path();
}

std::vector<float> cli_logits(const std::string& dir, const std::string& ids) {
  auto r = moe_test::run_moe("logits --threads 1 --model " + dir + " --ids " + ids);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const auto& row : j["logits"])
    for (const auto& v : row) out.push_back(v.is_null() ? NAN : v.get<float>());
  return out;
}

TEST(QuantCli, InitInspectLogits) {
  const std::string root = moe_test::make_temp_dir("cli_init");
  for (const char* fixture : {"deepseek_v3_base", "gpt_oss_mqa_yarn", "mixtral_legacy"}) {
    const std::string src = moe_test::fixture_path(fixture);
    for (const char* type : {"f32", "q4_0"}) {
      const std::string out = root + "/" + fixture + "_" + type;
      auto r = moe_test::run_moe("init --config " + src + "/config.json --random --type " + type +
                                 " --seed 3 --fused --out " + out);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_NE(r.err.find("moe init: wrote"), std::string::npos) << r.err;
      r = moe_test::run_moe("inspect --json --model " + out);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      auto mine = nlohmann::json::parse(r.out);
      auto theirs = nlohmann::json::parse(moe_test::run_moe("inspect --json --model " + src).out);
      EXPECT_EQ(mine["params_total"], theirs["params_total"]) << fixture;
      EXPECT_EQ(mine["model_type"], theirs["model_type"]);
      if (std::string(type) == "q4_0") {
        EXPECT_LT(mine["weight_bytes"].get<int64_t>(), theirs["weight_bytes"].get<int64_t>());
      }
      std::vector<float> lg = cli_logits(out, "1,2,3,4");
      ASSERT_EQ(lg.size(), 4u * 256u);
      for (float v : lg) ASSERT_TRUE(std::isfinite(v));
    }
  }
  fs::remove_all(root);
}

TEST(QuantCli, QuantizeRoundTrip) {
  const std::string root = moe_test::make_temp_dir("cli_quant");
  const std::string src = moe_test::fixture_path("qwen2_moe_sparse_sharded");  // sharded input
  for (const char* type : {"bf16", "q8_0", "q4_0"}) {
    for (const char* scope : {"", " --experts-only"}) {
      const std::string out = root + "/" + type + (scope[0] ? "_experts" : "_all");
      auto r = moe_test::run_moe(std::string("quantize --in ") + src + " --out " + out +
                                 " --type " + type + scope);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_NE(r.err.find(" -> "), std::string::npos) << r.err;
      EXPECT_NE(r.err.find(std::string("stored as ") + type), std::string::npos) << r.err;
      EXPECT_TRUE(fs::exists(out + "/config.json"));
      EXPECT_TRUE(fs::exists(out + "/generation_config.json"));
      expect_no_temp(out);
      // The CLI's logits are the library's on the quantized checkpoint.
      Model m;
      model_load(&m, out);
      std::vector<int32_t> ids = {1, 7, 42, 9, 100};
      InferState st;
      infer_state_init(&st, m, 5, 5);
      infer_forward(m, &st, ids.data(), 5, true);
      std::vector<float> lg = cli_logits(out, "1,7,42,9,100");
      ASSERT_EQ(lg.size(), 5u * m.cfg.vocab);
      for (size_t i = 0; i < lg.size(); ++i) ASSERT_NEAR(lg[i], st.logits[i], 1e-5f) << i;
      r = moe_test::run_moe("generate --model " + out + " --ids 1,7,42 -n 4 --temperature 0");
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
  }
  fs::remove_all(root);
}

TEST(QuantCli, BadInputGivesOneLineErrors) {
  const std::string root = moe_test::make_temp_dir("cli_bad");
  const std::string src = moe_test::fixture_path("olmoe_base");
  const std::string cfg = src + "/config.json";
  const std::string out = root + "/out";
  expect_one_line_error(
      moe_test::run_moe("quantize --in " + src + " --out " + out + " --type q5_1"),
      "--type 'q5_1'");
  expect_one_line_error(moe_test::run_moe("quantize --in " + src + " --out " + out + " --type f32"),
                        "--type 'f32'");
  expect_one_line_error(
      moe_test::run_moe("init --config " + cfg + " --random --out " + out + " --type int8"),
      "--type 'int8'");
  expect_one_line_error(
      moe_test::run_moe("init --config " + root + "/none.json --random --out " + out),
      root + "/none.json");
  expect_one_line_error(moe_test::run_moe("init --config " + cfg + " --out " + out), "--random");
  expect_one_line_error(
      moe_test::run_moe("quantize --in " + root + "/nodir --out " + out + " --type q8_0"),
      root + "/nodir");
  expect_one_line_error(moe_test::run_moe("quantize --in " + src + " --type q8_0"), "--out");
  EXPECT_FALSE(fs::exists(out));
  // Output folder exists (even empty), or cannot be created.
  fs::create_directories(out);
  expect_one_line_error(moe_test::run_moe("init --config " + cfg + " --random --out " + out),
                        "already exists");
  expect_one_line_error(
      moe_test::run_moe("quantize --in " + src + " --out " + out + " --type q8_0"),
      "already exists");
  EXPECT_TRUE(fs::is_empty(out));
  expect_one_line_error(
      moe_test::run_moe("init --config " + cfg + " --random --out " + root + "/no/such/dir"),
      "cannot create the output folder");
  std::ofstream(root + "/file") << "x";
  expect_one_line_error(
      moe_test::run_moe("quantize --in " + src + " --out " + root + "/file/sub --type q4_0"),
      "cannot create the output folder");
  // A failure half-way (a weight q8_0 cannot store) leaves nothing behind.
  const std::string nan_ckpt = root + "/nan";
  moe_test::copy_dir(src, nan_ckpt);
  {
    StArchive ar;
    st_open_file(&ar, nan_ckpt + "/model.safetensors");
    std::vector<std::vector<float>> data;
    std::vector<StWriteTensor> ts;
    for (const auto& [name, t] : ar.tensors) {
      data.emplace_back(t.numel());
      dtype_to_f32(t.dtype, t.data, data.back().data(), data.back().size());
      if (name == "model.layers.2.mlp.experts.7.down_proj.weight") data.back()[5] = NAN;
      ts.push_back({name, DT_F32, t.shape, data.back().data()});
    }
    st_write(nan_ckpt + "/model.safetensors.new", ts, ar.metadata);
  }
  fs::rename(nan_ckpt + "/model.safetensors.new", nan_ckpt + "/model.safetensors");
  const std::string out2 = root + "/out2";
  expect_one_line_error(
      moe_test::run_moe("quantize --in " + nan_ckpt + " --out " + out2 + " --type q8_0"),
      "experts.7.down_proj.weight' has a value that q8_0 cannot store");
  EXPECT_FALSE(fs::exists(out2));
  expect_no_temp(out2);
  fs::remove_all(root);
}

}  // namespace
}  // namespace moe
