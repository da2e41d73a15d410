// Tokenizers through GGUF metadata (text/gguf_tokenizer_write.h, text/gguf_tokenizer.h); the
// round trip of real tokenizers against the goldens is in gguf_tokenizer_test.cpp.
// - SentencePiece merges follow the scores, checked on a hand-made vocabulary;
// - the chat template of a folder; bad input is a one-line error.
#include "text/gguf_tokenizer_write.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "test_util.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Kv = std::vector<std::pair<std::string, GgufValue>>;

GgufValue strs(std::vector<std::string> v) {
  GgufValue x;
  x.type = GGUF_ARRAY;
  x.arr_type = GGUF_STRING;
  x.strs = std::move(v);
  return x;
}

GgufValue nums(GgufType t, std::vector<double> v) {
  GgufValue x;
  x.type = GGUF_ARRAY;
  x.arr_type = t;
  x.floats = v;
  for (double d : v) x.ints.push_back(static_cast<int64_t>(d));
  if (t != GGUF_F32) x.floats.clear();
  return x;
}

// A SentencePiece vocabulary by hand: "ab" becomes [▁, ab] when "ab" scores above "▁a", and
// [▁a, b] the other way round; "!" has no piece and falls back to its byte.
TEST(GgufSpmTokenizer, ScoresDecideTheMerges) {
  const std::string sp = "\xe2\x96\x81";  // ▁
  const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>",   "<0x21>", sp,
                                           "a",     "b",   sp + "a", "ab"};
  for (bool ab_first : {true, false}) {
    GgufFile g;
    g.path = "hand.gguf";
    g.kv["tokenizer.ggml.model"].type = GGUF_STRING;
    g.kv["tokenizer.ggml.model"].s = "llama";
    g.kv["tokenizer.ggml.tokens"] = strs(tokens);
    g.kv["tokenizer.ggml.scores"] =
        nums(GGUF_F32, {0, 0, 0, 0, -10, -11, -12, ab_first ? -5.0 : -1.0, ab_first ? -1.0 : -5.0});
    g.kv["tokenizer.ggml.token_type"] = nums(GGUF_I32, {2, 3, 3, 6, 1, 1, 1, 1, 1});
    g.kv["tokenizer.ggml.bos_token_id"].type = GGUF_U32;
    g.kv["tokenizer.ggml.bos_token_id"].i = 1;
    Tokenizer t;
    tokenizer_load_json(&t, gguf_tokenizer_json(g), g.path);
    const std::vector<int32_t> want =
        ab_first ? std::vector<int32_t>{4, 8, 3} : std::vector<int32_t>{7, 6, 3};
    EXPECT_EQ(tokenizer_encode(t, "ab!", false), want) << ab_first;
    std::vector<int32_t> with_bos = {1};
    with_bos.insert(with_bos.end(), want.begin(), want.end());
    EXPECT_EQ(tokenizer_encode(t, "ab!", true), with_bos);
    EXPECT_EQ(tokenizer_decode(t, want, false), "ab!");
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const MoeError& e) {
    return e.what();
  }
  return "";
}

TEST(GgufTokenizerWrite, BadInputIsOneLineError) {
  Kv kv;
  const std::string wp = R"({"model": {"type": "WordPiece", "vocab": {}}})";
  EXPECT_NE(error_of([&] {
              gguf_tokenizer_kv(wp, "t.json", 10, "", &kv);
            }).find("t.json: field 'model.type'"),
            std::string::npos);
  const std::string split = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Isolated", "invert": false}})";
  EXPECT_NE(
      error_of([&] { gguf_tokenizer_kv(split, "t.json", 10, "", &kv); }).find("'pre_tokenizer'"),
      std::string::npos);
  const std::string big = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 12}, "merges": []},
      "pre_tokenizer": {"type": "ByteLevel", "use_regex": true}})";
  const std::string e = error_of([&] { gguf_tokenizer_kv(big, "t.json", 10, "", &kv); });
  EXPECT_NE(e.find("t.json: token 'b' has id 12, outside the model's vocabulary of 10"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_NE(error_of([&] {
              gguf_tokenizer_kv("{", "t.json", 10, "", &kv);
            }).find("t.json: not valid JSON"),
            std::string::npos);
}

TEST(GgufTokenizerWrite, ChatTemplateOfAFolder) {
  const std::string dir = moe_test::make_temp_dir("hf_chat_template");
  EXPECT_EQ(hf_chat_template(dir), "");
  std::ofstream(dir + "/chat_template.jinja") << "J";
  EXPECT_EQ(hf_chat_template(dir), "J");
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})";
  EXPECT_EQ(hf_chat_template(dir), "D");
  std::ofstream(dir + "/tokenizer_config.json") << R"({"chat_template": "S"})";
  EXPECT_EQ(hf_chat_template(dir), "S");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
