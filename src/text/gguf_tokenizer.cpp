#include "text/gguf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moe {

namespace {

using ojson = nlohmann::json;  // key order is irrelevant in tokenizer.json; ordered_json inserts in O(n)

// Split patterns of the byte-level pre-tokenizers, by tokenizer.ggml.pre.
const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kO200k =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kDeepseekV3[] = {
    R"(\p{N}{1,3})",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};

ojson split(const char* re) {
  return {{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}};
}

ojson byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
          {"use_regex", use_regex}};
}

// pre_tokenizer (and normalizer) of a byte-level BPE tokenizer.
void byte_level_pre(const GgufFile& g, ojson* tok) {
  const std::string pre = g.get_str("tokenizer.ggml.pre", "default");
  ojson seq = ojson::array();
  if (pre == "default" || pre == "gpt2" || pre == "olmo") {
    (*tok)["pre_tokenizer"] = byte_level(true);
    return;
  }
  if (pre == "qwen2") {
    seq.push_back(split(kQwen2));
    (*tok)["normalizer"] = {{"type", "NFC"}};
  } else if (pre == "llama-bpe" || pre == "llama3") {
    seq.push_back(split(kLlama3));
  } else if (pre == "gpt-4o") {
    seq.push_back(split(kO200k));
  } else if (pre == "deepseek-v3") {
    for (const char* re : kDeepseekV3) seq.push_back(split(re));
  } else {
    fail("%s: key 'tokenizer.ggml.pre' is '%s', which is not supported (supported: default, "
         "gpt2, olmo, qwen2, llama-bpe, gpt-4o, deepseek-v3)", g.path.c_str(), pre.c_str());
  }
  seq.push_back(byte_level(false));
  (*tok)["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", seq}};
}

const GgufValue& string_array(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  if (!v) fail("%s: key '%s' is missing", g.path.c_str(), key.c_str());
  if (v->type != GGUF_ARRAY || v->arr_type != GGUF_STRING)
    fail("%s: key '%s' is not an array of strings", g.path.c_str(), key.c_str());
  return *v;
}

}  // namespace

std::string gguf_tokenizer_json(const GgufFile& g) {
  const std::string model = g.get_str("tokenizer.ggml.model");
  if (model != "gpt2")
    fail("%s: key 'tokenizer.ggml.model' is '%s', which is not supported (supported: gpt2)",
         g.path.c_str(), model.c_str());
  const std::vector<std::string>& tokens = string_array(g, "tokenizer.ggml.tokens").strs;
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<int64_t> types(tokens.size(), 1);
  if (const GgufValue* tt = g.find("tokenizer.ggml.token_type")) {
    if (tt->type != GGUF_ARRAY || tt->size() != tokens.size() || tt->ints.size() != tokens.size())
      fail("%s: key 'tokenizer.ggml.token_type' must be an integer array with one entry per "
           "token (%lld)", g.path.c_str(), static_cast<long long>(n));
    types = tt->ints;
  }
  ojson vocab = ojson::object(), added = ojson::array();
  // Every token is in the vocab (an added token's id comes from there, as in Hugging Face's
  // loader); control and user-defined tokens are also added tokens, matched before the split.
  for (int64_t i = 0; i < n; ++i) {
    vocab[tokens[i]] = i;
    if (types[i] == 3 || types[i] == 4)
      added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                       {"special", types[i] == 3}});
  }
  ojson merges = ojson::array();
  if (g.find("tokenizer.ggml.merges")) {
    for (const std::string& m : string_array(g, "tokenizer.ggml.merges").strs) {
      const size_t sp = m.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size())
        fail("%s: key 'tokenizer.ggml.merges': entry '%s' is not 'LEFT RIGHT'", g.path.c_str(),
             m.substr(0, 80).c_str());
      merges.push_back(ojson::array({m.substr(0, sp), m.substr(sp + 1)}));
    }
  }
  const std::string pre = g.get_str("tokenizer.ggml.pre", "default");
  ojson tok;
  tok["version"] = "1.0";
  tok["added_tokens"] = added;
  tok["normalizer"] = nullptr;
  byte_level_pre(g, &tok);
  tok["post_processor"] = nullptr;
  const int64_t bos = g.get_int("tokenizer.ggml.bos_token_id", -1);
  if (g.find("tokenizer.ggml.add_bos_token") && g.get_int("tokenizer.ggml.add_bos_token") != 0) {
    if (bos < 0 || bos >= n)
      fail("%s: key 'tokenizer.ggml.bos_token_id' is %lld, not a token id", g.path.c_str(),
           static_cast<long long>(bos));
    const std::string& b = tokens[bos];
    tok["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", ojson::array({{{"SpecialToken", {{"id", b}, {"type_id", 0}}}},
                                 {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", ojson::array({{{"SpecialToken", {{"id", b}, {"type_id", 0}}}},
                               {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                               {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{b, {{"id", b}, {"ids", {bos}}, {"tokens", {b}}}}}}};
  }
  tok["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                    {"use_regex", false}};
  tok["model"] = {{"type", "BPE"},          {"dropout", nullptr},       {"unk_token", nullptr},
                  {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
                  {"fuse_unk", false},      {"byte_fallback", false},
                  {"ignore_merges", pre == "llama-bpe" || pre == "gpt-4o"},
                  {"vocab", vocab},         {"merges", merges}};
  return tok.dump();
}

ChatTemplate gguf_chat_template(const GgufFile& g) {
  nlohmann::ordered_json cfg;
  cfg["chat_template"] = g.get_str("tokenizer.chat_template");
  const GgufValue* toks = g.find("tokenizer.ggml.tokens");
  for (const char* k : {"bos", "eos"}) {
    const std::string key = std::string("tokenizer.ggml.") + k + "_token_id";
    if (!toks || !g.find(key)) continue;
    const int64_t id = g.get_int(key);
    if (id >= 0 && id < static_cast<int64_t>(toks->strs.size()))
      cfg[std::string(k) + "_token"] = toks->strs[static_cast<size_t>(id)];
  }
  return chat_template_from_config(cfg, g.path);
}

void tokenizer_load_for_model(Tokenizer* t, const std::string& model,
                              const std::string& override_path) {
  if (!override_path.empty()) return tokenizer_load(t, override_path);
  if (!is_gguf_path(model)) return tokenizer_load(t, model + "/tokenizer.json");
  GgufFile g;
  gguf_open(&g, model);
  tokenizer_load_json(t, gguf_tokenizer_json(g), model);
}

}  // namespace moe
