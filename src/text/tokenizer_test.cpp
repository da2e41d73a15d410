// Unit tests of the tokenizer components on small hand-made tokenizer.json snippets. The expected
// values follow the Rust `tokenizers` library's source (and its own unit tests where it has them).
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "test_util.h"

namespace moe {
namespace {

using json = nlohmann::json;

// A BPE tokenizer.json with the given vocab (tokens get ids in order) and merges.
json bpe_json(const std::vector<std::string>& vocab, const json& merges = json::array()) {
  json v = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = static_cast<int>(i);
  return json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder", nullptr},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", v},
                {"merges", merges}}}};
}

Tokenizer load(const json& j) {
  Tokenizer t;
  tokenizer_load_json(&t, j.dump(), "test.json");
  return t;
}

std::vector<std::string> tokens(const Tokenizer& t, std::string_view text, bool special = false) {
  std::vector<std::string> out;
  for (int32_t id : tokenizer_encode(t, text, special)) {
    bool added = t.added_by_id.count(id) > 0;
    out.push_back(added ? t.added[t.added_by_id.at(id)].content : t.model.vocab_r.at(id));
  }
  return out;
}

std::string error_of(const json& j) {
  try {
    load(j);
  } catch (const MoeError& e) {
    return e.what();
  }
  return "(no error)";
}

json added(const std::string& content, int id, bool special, json extra = json::object()) {
  json a = {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
            {"rstrip", false}, {"normalized", false}, {"special", special}};
  for (auto& [k, v] : extra.items()) a[k] = v;
  return a;
}

std::vector<std::string> chars_vocab() {
  std::vector<std::string> v;
  for (char c = 'a'; c <= 'z'; ++c) v.push_back(std::string(1, c));
  v.push_back(" ");
  return v;
}

std::vector<std::string> pre_split(const Tokenizer& t, const std::string& text) {
  std::vector<tok::Piece> pieces(1);
  pieces[0].text = text;
  pieces[0].lead = 1;
  tok::pre_tokenize(t.pre_tokenizer, &pieces);
  std::vector<std::string> out;
  for (auto& p : pieces) out.push_back(p.text);
  return out;
}

using Strs = std::vector<std::string>;

// ---- BPE ----------------------------------------------------------------------------------------

TEST(TokenizerBpe, MergeRankDecidesAndBothMergeFormsAgree) {
  Strs vocab = {"a", "b", "c", "ab", "bc"};
  EXPECT_EQ(tokens(load(bpe_json(vocab, {"b c", "a b"})), "abc"), (Strs{"a", "bc"}));
  EXPECT_EQ(tokens(load(bpe_json(vocab, {"a b", "b c"})), "abc"), (Strs{"ab", "c"}));
  EXPECT_EQ(
      tokens(load(bpe_json(vocab, json::array({json::array({"b", "c"}), json::array({"a", "b"})}))),
             "abc"),
      (Strs{"a", "bc"}));
  // Equal ranks: the leftmost pair first ("aaa" -> "aa a").
  EXPECT_EQ(tokens(load(bpe_json({"a", "aa"}, {"a a"})), "aaa"), (Strs{"aa", "a"}));
  EXPECT_EQ(tokens(load(bpe_json({"a", "aa"}, {"a a"})), "aaaa"), (Strs{"aa", "aa"}));
}

TEST(TokenizerBpe, ByteFallbackAndItsDecoder) {
  Strs vocab;
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab.push_back(name);
  }
  vocab.push_back("a");  // id 256
  json j = bpe_json(vocab);
  j["model"]["byte_fallback"] = true;
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  Tokenizer t = load(j);
  EXPECT_EQ(tokenizer_encode(t, "a\xC3\xA9", false), (std::vector<int32_t>{256, 0xC3, 0xA9}));
  EXPECT_EQ(tokenizer_decode(t, {256, 0xC3, 0xA9}, false), "a\xC3\xA9");
  // An invalid run of byte tokens gives one U+FFFD per byte token (Rust), not per sequence.
  EXPECT_EQ(tokenizer_decode(t, {0xC3, 0x41}, false), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer_decode(t, {0xE2, 0x82, 256}, false),
            "\xEF\xBF\xBD\xEF\xBF\xBD"
            "a");
}

TEST(TokenizerBpe, UnknownTokenFusedOrNotOrDropped) {
  json j = bpe_json({"a", "<unk>"});
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(tokens(load(j), "axyza"), (Strs{"a", "<unk>", "a"}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(tokens(load(j), "axyza"), (Strs{"a", "<unk>", "<unk>", "<unk>", "a"}));
  j["model"]["unk_token"] = nullptr;  // no unk token: unknown characters vanish, as in Rust
  EXPECT_EQ(tokens(load(j), "axya"), (Strs{"a", "a"}));
  j["model"]["unk_token"] = "<missing>";
  EXPECT_THROW(tokenizer_encode(load(j), "x", false), MoeError);
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWordsFromTheVocab) {
  Strs vocab = {"h", "e", "l", "o", "he", "ll", "hello"};
  json j = bpe_json(vocab, {"h e", "l l"});
  EXPECT_EQ(tokens(load(j), "hello"), (Strs{"he", "ll", "o"}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(tokens(load(j), "hello"), (Strs{"hello"}));
  EXPECT_EQ(tokens(load(j), "hell"), (Strs{"he", "ll"}));
}

TEST(TokenizerBpe, ContinuingSubwordPrefixAndEndOfWordSuffix) {
  json j = bpe_json({"a", "##b", "ab", "b"}, {"a ##b"});
  j["model"]["continuing_subword_prefix"] = "##";
  EXPECT_EQ(tokens(load(j), "ab"), (Strs{"ab"}));
  json k = bpe_json({"a", "b</w>", "ab</w>"}, {"a b</w>"});
  k["model"]["end_of_word_suffix"] = "</w>";
  EXPECT_EQ(tokens(load(k), "ab"), (Strs{"ab</w>"}));
}

TEST(TokenizerBpe, LongWordsAndTheCacheGiveTheSameIds) {
  Tokenizer t = load(bpe_json({"a", "aa", "aaaa"}, {"a a", "aa aa"}));
  std::string w(1001, 'a');
  auto first = tokenizer_encode(t, w, false);
  EXPECT_EQ(first.size(), 251u);  // 250 x "aaaa" + "a"
  EXPECT_EQ(tokenizer_encode(t, w, false), first);
  EXPECT_EQ(tokenizer_encode(t, "aaaaa", false), tokenizer_encode(t, "aaaaa", false));
}

// ---- Normalizers --------------------------------------------------------------------------------

std::string normalized(const json& normalizer, const std::string& text) {
  json j = bpe_json({"a"});
  j["normalizer"] = normalizer;
  Tokenizer t = load(j);
  tok::Piece p;
  p.text = text;
  tok::normalize(t.normalizer, &p);
  return p.text;
}

TEST(TokenizerNormalizers, UnicodeForms) {
  EXPECT_EQ(normalized({{"type", "NFC"}}, "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(normalized({{"type", "NFD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(normalized({{"type", "NFKC"}}, "\xEF\xAC\x81"), "fi");  // U+FB01
  EXPECT_EQ(normalized({{"type", "NFKD"}}, "\xE2\x91\xA0"), "1");   // U+2460
  EXPECT_EQ(normalized({{"type", "NFC"}}, "plain ascii"), "plain ascii");
}

TEST(TokenizerNormalizers, LowercasePrependReplaceStripSequence) {
  // Rust's char::to_lowercase: U+0130 becomes "i\u0307"; capital sigma is always U+03C3.
  EXPECT_EQ(normalized({{"type", "Lowercase"}}, "AbC \xC4\xB0 \xCE\xA3"), "abc i\xCC\x87 \xCF\x83");
  EXPECT_EQ(normalized({{"type", "Prepend"}, {"prepend", "_"}}, "x"), "_x");
  EXPECT_EQ(normalized({{"type", "Prepend"}, {"prepend", "_"}}, ""), "");
  EXPECT_EQ(
      normalized({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "_"}}, "a b  c"),
      "a_b__c");
  EXPECT_EQ(normalized({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}},
                       "a \t\n b"),
            "a b");
  EXPECT_EQ(normalized({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, "  x  "),
            "x  ");
  EXPECT_EQ(normalized({{"type", "StripAccents"}}, "e\xCC\x81"), "e");
  EXPECT_EQ(
      normalized(
          {{"type", "Sequence"},
           {"normalizers",
            {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
             {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}},
          "Hi you"),
      "\xE2\x96\x81Hi\xE2\x96\x81you");
}

// ---- Pre-tokenizers -----------------------------------------------------------------------------

Strs split_with(const std::string& behavior, const json& pattern, bool invert,
                const std::string& text) {
  json j = bpe_json({"a"});
  j["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}};
  return pre_split(load(j), text);
}

TEST(TokenizerPreTokenizers, SplitBehaviours) {
  // The examples of Rust's SplitDelimiterBehavior documentation.
  json dash = {{"String", "-"}};
  const std::string s = "the-final--countdown";
  EXPECT_EQ(split_with("Removed", dash, false, s), (Strs{"the", "final", "countdown"}));
  EXPECT_EQ(split_with("Isolated", dash, false, s),
            (Strs{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_with("MergedWithPrevious", dash, false, s),
            (Strs{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_with("MergedWithNext", dash, false, s),
            (Strs{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_with("Contiguous", dash, false, s),
            (Strs{"the", "-", "final", "--", "countdown"}));
  json letters = {{"Regex", "[a-z]+"}};
  EXPECT_EQ(split_with("Removed", letters, true, "ab12cd"), (Strs{"ab", "cd"}));
  EXPECT_EQ(split_with("Isolated", letters, true, "ab12cd"), (Strs{"ab", "12", "cd"}));
  EXPECT_EQ(split_with("Removed", letters, false, "ab12cd"), (Strs{"12"}));
}

TEST(TokenizerPreTokenizers, OnigurumaWhitespaceIncludesNel) {
  EXPECT_EQ(tok::regex_translate("\\s+(?!\\S)"), "[\\s\\x{85}]+(?![^\\s\\x{85}])");
  EXPECT_EQ(tok::regex_translate("[^\\s\\p{L}]"), "[^\\s\\x{85}\\p{L}]");
  EXPECT_EQ(tok::regex_translate("\\u00e9{,2}"), "\\x{00e9}{0,2}");
  EXPECT_EQ(split_with("Isolated", {{"Regex", "\\s+"}}, false,
                       "a\xC2\x85"
                       "b"),
            (Strs{"a", "\xC2\x85", "b"}));
  EXPECT_EQ(split_with("Isolated", {{"Regex", "(?i:'s|'ll)"}}, false, "IT'S he'LL"),
            (Strs{"IT", "'S", " he", "'LL"}));
}

// A catastrophic-backtracking pattern (exponential in the input) stops at PCRE2's step bound within
// a second, with one line naming the file, the field and the pattern; a pattern of real models
// still splits a long run of one character class (linear work) without reaching the bound.
TEST(TokenizerPreTokenizers, CostlyRegexStopsWithOneLine) {
  json j = bpe_json({"a"});
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "^(\\w+\\s?)*$"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  Tokenizer t = load(j);
  std::string text(40, 'a');
  text += '!';
  std::string msg;
  double secs = moe_test::thread_cpu_seconds([&] {
    try {
      pre_split(t, text);
    } catch (const MoeError& e) {
      msg = e.what();
    }
  });
  EXPECT_LT(secs, moe_test::kOneSecondBound);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(msg.rfind("test.json: pre_tokenizer.pattern: regex '^(\\w+\\s?)*$' is too costly to match "
                      "(match limit exceeded, at byte 0 of a 41-byte piece)",
                      0),
            0u)
      << msg;
  // The GPT-2 style pattern over 2 MiB of letters and 2 MiB of spaces: well inside the bounds.
  std::string words(2u << 20, 'x');
  words += std::string(2u << 20, ' ');
  EXPECT_EQ(split_with("Isolated", {{"Regex", " ?\\p{L}+|\\s+(?!\\S)|\\s+"}}, false, words).size(), 2u);
}

TEST(TokenizerPreTokenizers, ByteLevel) {
  json j = bpe_json({"a"});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_split(load(j), "Hello world's"), (Strs{"\xC4\xA0"
                                                       "Hello",
                                                       "\xC4\xA0"
                                                       "world",
                                                       "'s"}));
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  EXPECT_EQ(pre_split(load(j), "a b\n\xC3\xA9"), (Strs{"a\xC4\xA0"
                                                       "b\xC4\x8A\xC3\x83\xC2\xA9"}));
}

TEST(TokenizerPreTokenizers, DigitsPunctuationWhitespace) {
  json j = bpe_json({"a"});
  j["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", true}};
  EXPECT_EQ(pre_split(load(j), "a123b"), (Strs{"a", "1", "2", "3", "b"}));
  j["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(pre_split(load(j), "a123b"), (Strs{"a", "123", "b"}));
  j["pre_tokenizer"] = {{"type", "Punctuation"}, {"behavior", "Isolated"}};
  EXPECT_EQ(pre_split(load(j), "hi!? x"), (Strs{"hi", "!", "?", " x"}));
  j["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  EXPECT_EQ(pre_split(load(j), " a  b\tc "), (Strs{"a", "b", "c"}));
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_EQ(pre_split(load(j), "Hey man!! ok?"), (Strs{"Hey", "man", "!!", "ok", "?"}));
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}}}};
  EXPECT_EQ(pre_split(load(j), "x12 y"), (Strs{"x", "1", "2", "y"}));
}

// Metaspace with a vocab of whole words (ignore_merges) and an added token in the middle.
Strs metaspace_tokens(const std::string& scheme, bool split, const std::string& text) {
  const std::string m = "\xE2\x96\x81";  // U+2581
  json j = bpe_json(
      {m + "hi", "hi", m + "there", "there", m, m + "hi" + m + "there", "hi" + m + "there"});
  j["model"]["ignore_merges"] = true;
  j["added_tokens"] = json::array({added("<x>", 7, true)});
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", m}, {"prepend_scheme", scheme}, {"split", split}};
  return tokens(load(j), text);
}

TEST(TokenizerPreTokenizers, MetaspacePrependSchemes) {
  const std::string m = "\xE2\x96\x81";
  EXPECT_EQ(metaspace_tokens("always", true, "hi<x>there"), (Strs{m + "hi", "<x>", m + "there"}));
  EXPECT_EQ(metaspace_tokens("first", true, "hi<x>there"), (Strs{m + "hi", "<x>", "there"}));
  EXPECT_EQ(metaspace_tokens("never", true, "hi<x>there"), (Strs{"hi", "<x>", "there"}));
  EXPECT_EQ(metaspace_tokens("first", true, "<x>hi"), (Strs{"<x>", "hi"}));
  EXPECT_EQ(metaspace_tokens("always", true, "hi there"), (Strs{m + "hi", m + "there"}));
  EXPECT_EQ(metaspace_tokens("first", false, "hi there"), (Strs{m + "hi" + m + "there"}));
  EXPECT_EQ(metaspace_tokens("never", false, "hi there"), (Strs{"hi" + m + "there"}));
}

// ---- Added tokens -------------------------------------------------------------------------------

TEST(TokenizerAddedTokens, LongestMatchFirst) {
  json j = bpe_json(chars_vocab());
  j["added_tokens"] = json::array({added("<a>", 27, true), added("<a><b>", 28, true)});
  EXPECT_EQ(tokens(load(j), "x<a><b>y<a>"), (Strs{"x", "<a><b>", "y", "<a>"}));
}

TEST(TokenizerAddedTokens, LstripRstrip) {
  json j = bpe_json(chars_vocab());
  j["added_tokens"] = json::array({added("<m>", 27, true)});
  EXPECT_EQ(tokens(load(j), "a  <m>  b"), (Strs{"a", " ", " ", "<m>", " ", " ", "b"}));
  j["added_tokens"] = json::array({added("<m>", 27, true, {{"lstrip", true}})});
  EXPECT_EQ(tokens(load(j), "a  <m>  b"), (Strs{"a", "<m>", " ", " ", "b"}));
  j["added_tokens"] = json::array({added("<m>", 27, true, {{"lstrip", true}, {"rstrip", true}})});
  EXPECT_EQ(tokens(load(j), "a  <m>  b"), (Strs{"a", "<m>", "b"}));
}

TEST(TokenizerAddedTokens, SingleWord) {
  json j = bpe_json(chars_vocab());
  j["added_tokens"] = json::array({added("ab", 27, false, {{"single_word", true}})});
  EXPECT_EQ(tokens(load(j), "ab cab abc ab"),
            (Strs{"ab", " ", "c", "a", "b", " ", "a", "b", "c", " ", "ab"}));
}

TEST(TokenizerAddedTokens, NormalizedTokensMatchTheNormalizedText) {
  json j = bpe_json(chars_vocab());
  j["normalizer"] = {{"type", "Lowercase"}};
  j["added_tokens"] = {added("hey", 27, false, {{"normalized", true}}),
                       added("YOU", 28, false, {{"normalized", false}})};
  Tokenizer t = load(j);
  EXPECT_EQ(tokens(t, "HeY YOU you"), (Strs{"hey", " ", "YOU", " ", "y", "o", "u"}));
}

TEST(TokenizerAddedTokens, IdsFollowTheVocabThenTheVocabSize) {
  json j = bpe_json({"a", "b", "<s>"});
  // "<s>" is in the vocab (id 2); "<new>" is not: Rust gives it the vocab size (3), not 99.
  j["added_tokens"] = json::array({added("<s>", 2, true), added("<new>", 99, true)});
  Tokenizer t = load(j);
  EXPECT_EQ(tokenizer_token_id(t, "<new>"), 3);
  EXPECT_EQ(tokenizer_encode(t, "a<new><s>", false), (std::vector<int32_t>{0, 3, 2}));
  EXPECT_EQ(tokenizer_token_id(t, "b"), 1);
  EXPECT_EQ(tokenizer_token_id(t, "zzz"), -1);
}

// ---- Post-processors and decoding ---------------------------------------------------------------

TEST(TokenizerPostProcessors, TemplateAndEmptyInput) {
  json j = bpe_json({"<s>", "</s>", "a"});
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single",
                          {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                           {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
                         {"pair", "<s> $A </s> $B:1 </s>:1"},
                         {"special_tokens",
                          {{"<s>", {{"id", "<s>"}, {"ids", {0}}, {"tokens", {"<s>"}}}},
                           {"</s>", {{"id", "</s>"}, {"ids", {1}}, {"tokens", {"</s>"}}}}}}};
  Tokenizer t = load(j);
  EXPECT_EQ(tokenizer_encode(t, "aa", true), (std::vector<int32_t>{0, 2, 2, 1}));
  EXPECT_EQ(tokenizer_encode(t, "aa", false), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(tokenizer_encode(t, "", false), (std::vector<int32_t>{}));
  EXPECT_EQ(tokenizer_encode(t, "", true), (std::vector<int32_t>{0, 1}));
  j["post_processor"] = {{"type", "RobertaProcessing"}, {"sep", {"</s>", 1}}, {"cls", {"<s>", 0}}};
  EXPECT_EQ(tokenizer_encode(load(j), "a", true), (std::vector<int32_t>{0, 2, 1}));
}

TEST(TokenizerDecoders, SkipsUnknownIdsAndSpecials) {
  json j = bpe_json({"a", "b"});
  j["added_tokens"] = json::array({added("<s>", 2, true), added("<t>", 3, false)});
  Tokenizer t = load(j);
  EXPECT_EQ(tokenizer_decode(t, {0, 2, 1, 3, 77, -5}, false), "a <s> b <t>");
  EXPECT_EQ(tokenizer_decode(t, {0, 2, 1, 3}, true), "a b <t>");
}

TEST(TokenizerDecoders, MetaspaceStripReplaceByteLevel) {
  const std::string m = "\xE2\x96\x81";
  json j = bpe_json({m + "a", m + "b", "c"});
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", m}, {"prepend_scheme", "always"}};
  EXPECT_EQ(tokenizer_decode(load(j), {0, 1, 2}, false), "a bc");
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", m}, {"prepend_scheme", "never"}};
  EXPECT_EQ(tokenizer_decode(load(j), {0, 1, 2}, false), " a bc");
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", m}}}, {"content", " "}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  EXPECT_EQ(tokenizer_decode(load(j), {0, 1, 2}, false), "a bc");
  json k =
      bpe_json({"\xC4\xA0"
                "hi",
                "\xC3\x83\xC2\xA9", "\xE2\x96\x81x", "\xC3\xA9"});
  k["decoder"] = {{"type", "ByteLevel"}};
  // U+00C3 U+00A9 are the byte chars of 0xC3 0xA9 ("é"); a token with a char outside the byte
  // alphabet keeps its own UTF-8.
  EXPECT_EQ(tokenizer_decode(load(k), {0, 1, 2}, false), " hi\xC3\xA9\xE2\x96\x81x");
  // U+00E9 alone is byte 0xE9, not valid UTF-8 by itself: Rust's from_utf8_lossy gives U+FFFD.
  EXPECT_EQ(tokenizer_decode(load(k), {3}, false), "\xEF\xBF\xBD");
}

// ---- Streaming ----------------------------------------------------------------------------------

TEST(TokenizerStream, NeverEmitsPartialUtf8AndConcatenatesToTheFullDecode) {
  Strs vocab;
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab.push_back(name);
  }
  vocab.push_back(
      "\xE2\x96\x81"
      "a");  // 256
  json j = bpe_json(vocab);
  j["model"]["byte_fallback"] = true;
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  Tokenizer t = load(j);
  std::vector<int32_t> ids = {256, 0xF0, 0x9F, 0x98, 0x80, 256, 0xC3, 0xA9, 256};
  DecodeStream st;
  std::vector<std::string> steps;
  std::string all;
  for (int32_t id : ids) {
    steps.push_back(decode_stream_step(t, &st, id));
    EXPECT_TRUE(tok::utf8_valid(steps.back()));
    all += steps.back();
  }
  EXPECT_EQ(steps, (Strs{"a", "", "", "", "\xF0\x9F\x98\x80", " a", "", "\xC3\xA9", " a"}));
  EXPECT_EQ(all, tokenizer_decode(t, ids, false));
}

// ---- Input handling and threads -----------------------------------------------------------------

TEST(TokenizerInput, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(tok::utf8_lossy("a\xFF"
                            "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(tok::utf8_lossy("\xE2\x82"), "\xEF\xBF\xBD");  // one maximal subpart
  EXPECT_EQ(tok::utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  json j = bpe_json({"a", "\xEF\xBF\xBD"});
  Tokenizer t = load(j);
  EXPECT_EQ(tokenizer_encode(t, "a\xC3", false), (std::vector<int32_t>{0, 1}));
}

TEST(TokenizerThreads, ConcurrentEncodesAgree) {
  json j = bpe_json(chars_vocab(), {"a b", "c d", "ab cd"});
  j["model"]["vocab"]["ab"] = 27;
  j["model"]["vocab"]["cd"] = 28;
  j["model"]["vocab"]["abcd"] = 29;
  j["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  Tokenizer t = load(j);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i)
    texts.push_back("abcd ab cd " + std::string(i % 7, 'a') + "bcd x" + std::to_string(i));
  std::vector<std::vector<int32_t>> expect;
  for (auto& s : texts) expect.push_back(tokenizer_encode(t, s, false));
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k]() {
      for (int rep = 0; rep < 50; ++rep)
        for (size_t i = 0; i < texts.size(); ++i)
          bad[k] += tokenizer_encode(t, texts[i], false) != expect[i];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

// ---- Errors -------------------------------------------------------------------------------------

TEST(TokenizerErrors, NameTheFileAndTheComponent) {
  json j = bpe_json({"a", "b"});
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Digits"}}, {{"type", "Foo"}}}}};
  EXPECT_EQ(error_of(j), "test.json: pre_tokenizer.pretokenizers[1]: unknown type 'Foo'");

  json n = bpe_json({"a"});
  n["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  EXPECT_NE(error_of(n).find("test.json: normalizer: type 'Precompiled'"), std::string::npos);

  json d = bpe_json({"a"});
  d["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "Nope"}}}}};
  EXPECT_EQ(error_of(d), "test.json: decoder.decoders[0]: unknown type 'Nope'");

  json p = bpe_json({"a"});
  p["post_processor"] = {
      {"type", "TemplateProcessing"}, {"single", "<s> $A"}, {"special_tokens", json::object()}};
  EXPECT_EQ(
      error_of(p),
      "test.json: post_processor.single[0]: special token '<s>' is missing from special_tokens");
}

TEST(TokenizerErrors, BrokenModels) {
  EXPECT_EQ(error_of(bpe_json({"a", "b"}, {"a c"})),
            "test.json: model.merges[0]: merge token 'c' is not in the vocab");
  EXPECT_EQ(error_of(bpe_json({"a", "b"}, {"a b"})),
            "test.json: model.merges[0]: merged token 'ab' is not in the vocab");
  EXPECT_EQ(error_of(bpe_json({"a", "b", "ab"}, {"a b c"})),
            "test.json: model.merges[0]: expected \"a b\" (two tokens separated by one space), got "
            "'a b c'");
  json j = bpe_json({"a"});
  j["model"].erase("vocab");
  EXPECT_EQ(error_of(j), "test.json: model.vocab: missing");
  j = bpe_json({"a"});
  j["model"]["vocab"]["b"] = "x";
  EXPECT_EQ(error_of(j), "test.json: model.vocab['b']: expected an integer, got a string");
  j = bpe_json({"a"});
  j["model"]["vocab"]["b"] = 100000000;
  EXPECT_EQ(error_of(j),
            "test.json: model.vocab: ids are too sparse (largest id 100000000 for 2 tokens)");
  j = bpe_json({"a"});
  j["model"]["dropout"] = 0.1;
  EXPECT_NE(error_of(j).find("test.json: model.dropout: BPE dropout must be null"),
            std::string::npos);
  j = bpe_json({"a"});
  j["model"]["type"] = "Unigram";
  EXPECT_NE(error_of(j).find("test.json: model: type 'Unigram' is not supported"),
            std::string::npos);
  j = bpe_json({"a"});
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  EXPECT_NE(error_of(j).find("test.json: pre_tokenizer.pattern: invalid regex '(unclosed'"),
            std::string::npos);
}

TEST(TokenizerErrors, MalformedJsonAndMissingFile) {
  Tokenizer t;
  try {
    tokenizer_load_json(&t, "{\"model\": [1, 2", "x/tokenizer.json");
    FAIL() << "no error";
  } catch (const MoeError& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind("x/tokenizer.json: malformed JSON: ", 0), 0u) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
  EXPECT_THROW(tokenizer_load(&t, "/nonexistent/tokenizer.json"), MoeError);
}

}  // namespace
}  // namespace moe
