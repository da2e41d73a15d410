// Checkpoint validation: every tensor present, none unexpected, shapes matching config.json, and
// one-line errors naming the file and tensor, from the library and from the CLI.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "test_util.h"

namespace moe {
namespace {

const char* kConfig = R"({"model_type": "mixtral", "vocab_size": 16, "hidden_size": 8,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
  "intermediate_size": 4, "num_local_experts": 2, "num_experts_per_tok": 1,
  "eos_token_id": 2})";

struct Ckpt {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::vector<float>> data;
  void add(const std::string& n, std::vector<int64_t> s) {
    int64_t k = 1;
    for (int64_t d : s) k *= d;
    std::mt19937 g(static_cast<uint32_t>(names.size()));
    std::normal_distribution<float> dist(0.0f, 0.1f);
    std::vector<float> v(k);
    for (float& x : v) x = dist(g);
    names.push_back(n);
    shapes.push_back(s);
    data.push_back(v);
  }
  void erase(const std::string& n) {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == n) {
        names.erase(names.begin() + i);
        shapes.erase(shapes.begin() + i);
        data.erase(data.begin() + i);
        return;
      }
  }
  void write(const std::string& dir, const std::string& config = kConfig) const {
    std::vector<StWriteTensor> ts;
    for (size_t i = 0; i < names.size(); ++i)
      ts.push_back({names[i], DT_F32, shapes[i], data[i].data()});
    st_write(dir + "/model.safetensors", ts, {{"format", "pt"}});
    std::ofstream(dir + "/config.json") << config;
  }
};

Ckpt tiny_mixtral() {
  Ckpt c;
  c.add("model.embed_tokens.weight", {16, 8});
  c.add("model.norm.weight", {8});
  c.add("lm_head.weight", {16, 8});
  const std::string p = "model.layers.0.";
  c.add(p + "input_layernorm.weight", {8});
  c.add(p + "post_attention_layernorm.weight", {8});
  c.add(p + "self_attn.q_proj.weight", {8, 8});
  c.add(p + "self_attn.k_proj.weight", {4, 8});
  c.add(p + "self_attn.v_proj.weight", {4, 8});
  c.add(p + "self_attn.o_proj.weight", {8, 8});
  c.add(p + "block_sparse_moe.gate.weight", {2, 8});
  for (int e = 0; e < 2; ++e) {
    std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
    c.add(q + "w1.weight", {4, 8});
    c.add(q + "w3.weight", {4, 8});
    c.add(q + "w2.weight", {8, 4});
  }
  return c;
}

std::string load_error(const std::string& dir) {
  Model m;
  try {
    model_load(&m, dir);
  } catch (const MoeError& e) {
    return e.what();
  }
  return "";
}

TEST(ModelLoad, ValidTinyCheckpointLoads) {
  std::string dir = moe_test::make_temp_dir("ok");
  tiny_mixtral().write(dir);
  Model m;
  model_load(&m, dir);
  EXPECT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].experts.size(), 2u);
  EXPECT_EQ(m.cfg.eos_ids, std::vector<int>{2});
  EXPECT_EQ(m.n_params, 16 * 8 * 2 + 8 * 3 + 8 * 8 * 2 + 4 * 8 * 2 + 2 * 8 + 2 * (4 * 8 * 3));
}

TEST(ModelLoad, MissingTensorIsNamed) {
  std::string dir = moe_test::make_temp_dir("missing");
  Ckpt c = tiny_mixtral();
  c.erase("model.layers.0.block_sparse_moe.experts.1.w2.weight");
  c.write(dir);
  std::string e = load_error(dir);
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("'model.layers.0.block_sparse_moe.experts.1.w2.weight' is missing"),
            std::string::npos)
      << e;
}

TEST(ModelLoad, ShapeMismatchIsNamed) {
  std::string dir = moe_test::make_temp_dir("shape");
  Ckpt c = tiny_mixtral();
  c.shapes[c.names.size() - 1] = {4, 8};  // experts.1.w2 should be [8, 4]
  c.write(dir);
  std::string e = load_error(dir);
  EXPECT_NE(
      e.find("experts.1.w2.weight': shape [4, 8] does not match config.json, which implies [8, 4]"),
      std::string::npos)
      << e;
}

TEST(ModelLoad, UnexpectedTensorIsNamed) {
  std::string dir = moe_test::make_temp_dir("extra");
  Ckpt c = tiny_mixtral();
  c.add("model.layers.0.block_sparse_moe.experts.2.w1.weight", {4, 8});
  c.write(dir);
  std::string e = load_error(dir);
  EXPECT_NE(e.find("'model.layers.0.block_sparse_moe.experts.2.w1.weight' is not expected"),
            std::string::npos)
      << e;
}

TEST(ModelLoad, ConfigDisagreeingWithWeights) {
  std::string dir = moe_test::make_temp_dir("cfg");
  std::string cfg = kConfig;
  cfg.replace(cfg.find("\"hidden_size\": 8"), 16, "\"hidden_size\": 16");
  tiny_mixtral().write(dir, cfg);
  std::string e = load_error(dir);
  EXPECT_NE(e.find("model.embed_tokens.weight': shape [16, 8] does not match"), std::string::npos)
      << e;
}

TEST(ModelLoad, MissingFolderAndConfig) {
  EXPECT_NE(load_error("/nonexistent/dir").find("/nonexistent/dir/config.json"), std::string::npos);
  std::string dir = moe_test::make_temp_dir("nocfg");
  EXPECT_NE(load_error(dir).find("config.json"), std::string::npos);
  std::ofstream(dir + "/config.json") << kConfig;
  EXPECT_NE(load_error(dir).find(dir), std::string::npos);  // no weights
}

TEST(Cli, BadInputGivesOneLineErrorAndNonZeroExit) {
  std::string dir = moe_test::make_temp_dir("cli");
  tiny_mixtral().write(dir);
  auto ok = moe_test::run_moe("logits --model " + dir + " --ids 1,2,3");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  struct Case {
    std::string args, needle;
  };
  std::vector<Case> cases = {
      {"logits --model " + dir + " --ids 1,x,3", "--ids: 'x'"},
      {"logits --model " + dir + " --ids 1,99", "token id 99 is outside the vocabulary"},
      {"logits --model " + dir + " --ids ''", "--ids"},
      {"logits --model /nonexistent --ids 1", "/nonexistent/config.json"},
      {"generate --model " + dir + " --ids 1 --top-p 0", "--top-p"},
      {"generate --model " + dir + " --ids 1 --temperature -1", "--temperature"},
      {"logits --ids 1", "--model"},
      {"frobnicate", "frobnicate"},
  };
  for (const Case& c : cases) {
    auto r = moe_test::run_moe(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_LT(r.exit_code, 128) << c.args << " crashed";
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << " -> " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << " -> " << r.err;
    EXPECT_TRUE(r.out.empty()) << c.args;
  }
  // A truncated weights file.
  std::filesystem::resize_file(dir + "/model.safetensors", 100);
  auto r = moe_test::run_moe("logits --model " + dir + " --ids 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("model.safetensors"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// The tensor list derived from a config alone names exactly the tensors of each fixture.
TEST(ModelSpecs, SpecsMatchEveryFixture) {
  for (const std::string& name : moe_test::fixture_names()) {
    Model m;
    model_load(&m, moe_test::fixture_path(name));
    std::vector<TensorSpec> specs = model_tensor_specs(m.cfg, m.fused_experts);
    EXPECT_EQ(specs.size(), m.archive.tensors.size()) << name;
    for (const TensorSpec& s : specs) {
      const StTensor* t = m.archive.find(s.name);
      ASSERT_NE(t, nullptr) << name << ": " << s.name;
      EXPECT_EQ(t->shape, s.shape) << name << ": " << s.name;
    }
  }
}

}  // namespace
}  // namespace moe
