// Byte-level BPE training: merge order on a hand-checkable text, encoding, and the JSON it writes.
#include "text/bpe_train.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {
namespace {

std::string decode(const BpeModel& m, const std::vector<int32_t>& ids) {
  // Inverse of the byte-level mapping: token strings back to bytes.
  std::string out;
  for (int32_t id : ids) {
    const std::string& t = m.tokens[id];
    for (size_t i = 0; i < t.size();) {
      uint32_t cp = static_cast<uint8_t>(t[i]);
      int n = 1;
      if (cp >= 0xC0) {
        cp = ((cp & 0x1F) << 6) | (static_cast<uint8_t>(t[i + 1]) & 0x3F);
        n = 2;
      }
      i += n;
      for (int b = 0; b < 256; ++b)
        if (m.tokens[b] == t.substr(i - n, n)) out += static_cast<char>(b);
    }
  }
  return out;
}

TEST(BpeTrain, MergesMostFrequentPairsFirst) {
  BpeModel m;
  BpeTrainParams p;
  p.vocab_size = 256 + 3 + 1;
  std::string text = "aaab aaab aaab ab ab";
  bpe_train(&m, {text}, p);
  ASSERT_EQ(m.merges.size(), 3u);
  // pre-tokens: "aaab" x1, " aaab" x2, " ab" x2. Pair counts: (a,a) 6, (a,b) 5, (' ',a) 4.
  EXPECT_EQ(m.merges[0], std::make_pair(int32_t{'a'}, int32_t{'a'}));
  EXPECT_EQ(m.tokens[256], "aa");
  EXPECT_EQ(m.special_id("<|endoftext|>"), 259);
  EXPECT_EQ(m.tokens.size(), 260u);
}

TEST(BpeTrain, EncodeRoundTripsAndReportsPieces) {
  BpeModel m;
  BpeTrainParams p;
  p.vocab_size = 300;
  std::string text = "The jury said it did. The jury's presentments were fine!\n\n  Numbers 1961, 42.";
  bpe_train(&m, {text, text}, p);
  std::vector<int32_t> ids;
  std::vector<uint32_t> begin;
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  bpe_encode(m, text, &ids, &begin, &cache);
  EXPECT_EQ(decode(m, ids), text);
  EXPECT_LT(ids.size(), text.size());  // merges happened
  ASSERT_EQ(begin.size(), ids.size());
  EXPECT_EQ(begin.front(), 0u);
  EXPECT_TRUE(std::is_sorted(begin.begin(), begin.end()));
  // Cached and uncached encodings agree.
  std::vector<int32_t> ids2;
  bpe_encode(m, text, &ids2, nullptr, nullptr);
  EXPECT_EQ(ids, ids2);
}

TEST(BpeTrain, TokenizerJsonShape) {
  BpeModel m;
  BpeTrainParams p;
  p.vocab_size = 270;
  bpe_train(&m, {"hello hello hello world world"}, p);
  auto j = nlohmann::json::parse(bpe_tokenizer_json(m));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["model"]["vocab"].size(), 256 + m.merges.size());
  EXPECT_EQ(j["model"]["merges"].size(), m.merges.size());
  EXPECT_EQ(j["model"]["vocab"]["\xC4\xA0"], 32);  // space is U+0120 in byte-level form
  EXPECT_EQ(j["added_tokens"][0]["content"], "<|endoftext|>");
}

// The tokenizer.json it writes encodes exactly as the trainer's own encoder, through the
// engine's Hugging Face tokenizer, and decodes back to the text.
TEST(BpeTrain, WrittenTokenizerEncodesIdentically) {
  std::string text =
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
      "election produced \"no evidence\" that any irregularities took place.\n  Tabs\tand 1961 "
      "numbers, it's done; they've gone! Unicode: caf\xc3\xa9 na\xc3\xafve "
      "\xe6\x97\xa5\xe6\x9c\xac";
  BpeModel m;
  BpeTrainParams p;
  p.vocab_size = 400;
  bpe_train(&m, {text, text, text}, p);
  Tokenizer tok;
  tokenizer_load_json(&tok, bpe_tokenizer_json(m), "trained.json");
  for (std::string_view probe : {std::string_view(text), std::string_view("jury evidence 42 x"),
                                 std::string_view(" leading space and trailing  ")}) {
    std::vector<int32_t> mine;
    bpe_encode(m, probe, &mine, nullptr, nullptr);
    EXPECT_EQ(tokenizer_encode(tok, probe, false), mine) << probe;
    EXPECT_EQ(tokenizer_decode(tok, mine, false), probe);
  }
  EXPECT_EQ(tokenizer_token_id(tok, "<|endoftext|>"), m.special_id("<|endoftext|>"));
}

TEST(BpeTrain, InvalidUtf8AndTinyVocab) {
  EXPECT_EQ(utf8_sanitize("a\xff" "b\xc3"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(utf8_sanitize("\xc3\xa9"), "\xc3\xa9");
  BpeModel m;
  BpeTrainParams p;
  p.vocab_size = 100;
  EXPECT_THROW(bpe_train(&m, {"abc"}, p), MoeError);
  std::vector<int32_t> ids;
  p.vocab_size = 260;
  bpe_train(&m, {"abc abc"}, p);
  EXPECT_THROW(bpe_encode(m, "bad \xff utf8", &ids, nullptr, nullptr), MoeError);
}

}  // namespace
}  // namespace moe
