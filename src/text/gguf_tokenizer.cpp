#include "text/gguf_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>

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

// pre_tokenizer (and normalizer) of a byte-level BPE tokenizer whose tokenizer.ggml.pre is `pre`;
// false if that name is not known.
bool byte_level_pre_named(const std::string& pre, ojson* tok) {
  ojson seq = ojson::array();
  if (pre == "default" || pre == "gpt2" || pre == "olmo") {
    (*tok)["pre_tokenizer"] = byte_level(true);
    return true;
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
    return false;
  }
  seq.push_back(byte_level(false));
  (*tok)["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", seq}};
  return true;
}

void byte_level_pre(const GgufFile& g, ojson* tok) {
  const std::string pre = g.get_str("tokenizer.ggml.pre", "default");
  if (!byte_level_pre_named(pre, tok))
    fail("%s: key 'tokenizer.ggml.pre' is '%s', which is not supported (supported: default, "
         "gpt2, olmo, qwen2, llama-bpe, gpt-4o, deepseek-v3)", g.path.c_str(), pre.c_str());
}

// A Split pattern with control characters written as regex escapes (a tokenizer.json may hold
// a literal CR / LF where another writes \r / \n: the same regex).
ojson escaped_pattern(ojson pat) {
  if (!pat.is_object() || !pat.contains("Regex") || !pat["Regex"].is_string()) return pat;
  std::string out;
  for (char ch : pat["Regex"].get<std::string>())
    out += ch == '\r' ? std::string("\\r") : ch == '\n' ? std::string("\\n")
           : ch == '\t' ? std::string("\\t") : std::string(1, ch);
  pat["Regex"] = out;
  return pat;
}

// The fields of a pre-tokenizer that decide the split: ByteLevel's use_regex, Split's pattern,
// behavior and invert, Sequence's children.
ojson split_fields(const ojson& p) {
  if (!p.is_object()) return p;
  const std::string type = p.value("type", "");
  if (type == "ByteLevel") return {{"type", type}, {"use_regex", p.value("use_regex", true)}};
  if (type == "Split")
    return {{"type", type}, {"pattern", escaped_pattern(p.value("pattern", ojson()))},
            {"behavior", p.value("behavior", "")}, {"invert", p.value("invert", false)}};
  if (type != "Sequence") return p;
  ojson kids = ojson::array();
  for (const ojson& c : p.value("pretokenizers", ojson::array())) kids.push_back(split_fields(c));
  return {{"type", type}, {"pretokenizers", kids}};
}

const GgufValue& string_array(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  if (!v) fail("%s: key '%s' is missing", g.path.c_str(), key.c_str());
  if (v->type != GGUF_ARRAY || v->arr_type != GGUF_STRING)
    fail("%s: key '%s' is not an array of strings", g.path.c_str(), key.c_str());
  return *v;
}

}  // namespace

std::string gguf_pre_name_of(const nlohmann::json& pre_tokenizer) {
  const ojson want = split_fields(pre_tokenizer);
  for (const char* name : {"gpt2", "qwen2", "llama-bpe", "gpt-4o", "deepseek-v3"}) {
    ojson tok;
    byte_level_pre_named(name, &tok);
    if (split_fields(tok["pre_tokenizer"]) == want) return name;
  }
  return "";
}

namespace {

// tokenizer.ggml.token_type, one per token (1, normal, when the key is absent).
std::vector<int64_t> token_types(const GgufFile& g, size_t n) {
  std::vector<int64_t> types(n, 1);
  if (const GgufValue* tt = g.find("tokenizer.ggml.token_type")) {
    if (tt->type != GGUF_ARRAY || tt->size() != n || tt->ints.size() != n)
      fail("%s: key 'tokenizer.ggml.token_type' must be an integer array with one entry per "
           "token (%lld)", g.path.c_str(), static_cast<long long>(n));
    types = tt->ints;
  }
  return types;
}

// The vocab (every token, by id: an added token's id comes from there, as in Hugging Face's
// loader) and the added tokens, matched before the split: control tokens (type 3; with unknown,
// 2, when unknown_special) are special, user-defined ones (4) are not.
void vocab_and_added(const std::vector<std::string>& tokens, const std::vector<int64_t>& types,
                     bool unknown_special, ojson* vocab, ojson* added) {
  *vocab = ojson::object();
  *added = ojson::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    (*vocab)[tokens[i]] = i;  // the last of equal tokens wins, as in llama.cpp
    const bool special = types[i] == 3 || (unknown_special && types[i] == 2);
    if (special || types[i] == 4)
      added->push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false},
                        {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                        {"special", special}});
  }
}

// A TemplateProcessing post-processor adding BOS (tokenizer.ggml.add_bos_token, default
// add_bos_default) before and EOS (add_eos_token, default false) after the text; null if neither.
ojson special_post(const GgufFile& g, const std::vector<std::string>& tokens,
                   bool add_bos_default) {
  ojson single = ojson::array(), pair = ojson::array(), specials = ojson::object();
  auto piece = [&](const char* which, int type_id, ojson* to) {
    const std::string key = std::string("tokenizer.ggml.") + which + "_token_id";
    const int64_t id = g.get_int(key, -1);
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()))
      fail("%s: key '%s' is %lld, not a token id", g.path.c_str(), key.c_str(),
           static_cast<long long>(id));
    const std::string& t = tokens[id];
    to->push_back({{"SpecialToken", {{"id", t}, {"type_id", type_id}}}});
    specials[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
  };
  const bool bos = g.get_int("tokenizer.ggml.add_bos_token", add_bos_default ? 1 : 0) != 0;
  const bool eos = g.get_int("tokenizer.ggml.add_eos_token", 0) != 0;
  if (!bos && !eos) return nullptr;
  if (bos) piece("bos", 0, &single), piece("bos", 0, &pair);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  pair.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
  if (eos) piece("eos", 0, &single), piece("eos", 1, &pair);
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair},
          {"special_tokens", specials}};
}

// Byte-level BPE (tokenizer.ggml.model "gpt2").
std::string gpt2_tokenizer_json(const GgufFile& g) {
  const std::vector<std::string>& tokens = string_array(g, "tokenizer.ggml.tokens").strs;
  const std::vector<int64_t> types = token_types(g, tokens.size());
  ojson vocab, added;
  vocab_and_added(tokens, types, false, &vocab, &added);
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
  tok["post_processor"] = special_post(g, tokens, false);
  tok["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                    {"use_regex", false}};
  tok["model"] = {{"type", "BPE"},          {"dropout", nullptr},       {"unk_token", nullptr},
                  {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
                  {"fuse_unk", false},      {"byte_fallback", false},
                  {"ignore_merges", pre == "llama-bpe" || pre == "gpt-4o"},
                  {"vocab", vocab},         {"merges", merges}};
  return tok.dump();
}

// SentencePiece BPE merges from the pieces' scores, as Hugging Face's converter derives them
// (transformers' SentencePieceExtractor): for each piece in id order, every split into two
// pieces of the vocab at a character boundary, ordered by the two ids; then all of them ordered
// by the score of the piece they make, highest first (a stable sort).
ojson spm_merges(const std::vector<std::string>& tokens, const std::vector<double>& scores) {
  std::unordered_map<std::string_view, int64_t> id;  // piece -> its id (the last of equal ones)
  for (size_t i = 0; i < tokens.size(); ++i) id[tokens[i]] = static_cast<int64_t>(i);
  struct Merge {
    int64_t l, r;
    double score;
  };
  std::vector<Merge> all, local;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string_view p = tokens[i];
    local.clear();
    for (size_t k = 1; k < p.size(); ++k) {
      if ((static_cast<unsigned char>(p[k]) & 0xc0) == 0x80) continue;  // inside a character
      auto l = id.find(p.substr(0, k)), r = id.find(p.substr(k));
      if (l != id.end() && r != id.end()) local.push_back({l->second, r->second, scores[i]});
    }
    std::sort(local.begin(), local.end(),
              [](const Merge& a, const Merge& b) { return a.l != b.l ? a.l < b.l : a.r < b.r; });
    all.insert(all.end(), local.begin(), local.end());
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  ojson merges = ojson::array();
  for (const Merge& m : all) merges.push_back(ojson::array({tokens[m.l], tokens[m.r]}));
  return merges;
}

// SentencePiece-style BPE (tokenizer.ggml.model "llama"): the tokenizer.json of Llama 2 /
// Mixtral's form (see gguf_tokenizer.h).
std::string gguf_spm_tokenizer_json(const GgufFile& g) {
  const std::vector<std::string>& tokens = string_array(g, "tokenizer.ggml.tokens").strs;
  const size_t n = tokens.size();
  const std::vector<int64_t> types = token_types(g, n);
  std::vector<double> scores(n, 0.0);
  if (const GgufValue* sc = g.find("tokenizer.ggml.scores")) {
    if (sc->type != GGUF_ARRAY || sc->floats.size() != n)
      fail("%s: key 'tokenizer.ggml.scores' must be a float array with one entry per token "
           "(%lld)", g.path.c_str(), static_cast<long long>(n));
    scores = sc->floats;
  }
  ojson vocab, added;
  vocab_and_added(tokens, types, true, &vocab, &added);
  int64_t unk = g.get_int("tokenizer.ggml.unknown_token_id", -1);
  for (size_t i = 0; i < n && unk < 0; ++i)
    if (types[i] == 2) unk = static_cast<int64_t>(i);
  if (unk >= static_cast<int64_t>(n))
    fail("%s: key 'tokenizer.ggml.unknown_token_id' is %lld, not a token id", g.path.c_str(),
         static_cast<long long>(unk));
  const bool bytes = std::find(types.begin(), types.end(), 6) != types.end();
  const bool prefix = g.get_int("tokenizer.ggml.add_space_prefix", 1) != 0;
  const ojson replace_space = {
      {"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}};
  ojson norms = ojson::array();
  if (prefix) norms.push_back({{"type", "Prepend"}, {"prepend", "\u2581"}});
  norms.push_back(replace_space);
  ojson decs = ojson::array({{{"type", "Replace"},
                              {"pattern", {{"String", "\u2581"}}},
                              {"content", " "}},
                             {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
  if (prefix) decs.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  ojson tok;
  tok["version"] = "1.0";
  tok["added_tokens"] = added;
  tok["normalizer"] = {{"type", "Sequence"}, {"normalizers", norms}};
  tok["pre_tokenizer"] = nullptr;
  tok["post_processor"] = special_post(g, tokens, true);
  tok["decoder"] = {{"type", "Sequence"}, {"decoders", decs}};
  tok["model"] = {{"type", "BPE"}, {"dropout", nullptr},
                  {"unk_token", unk >= 0 ? ojson(tokens[unk]) : ojson()},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", true}, {"byte_fallback", bytes},
                  {"vocab", vocab}, {"merges", spm_merges(tokens, scores)}};
  return tok.dump();
}

}  // namespace

std::string gguf_tokenizer_json(const GgufFile& g) {
  const std::string model = g.get_str("tokenizer.ggml.model");
  if (model == "gpt2") return gpt2_tokenizer_json(g);
  if (model == "llama") return gguf_spm_tokenizer_json(g);
  fail("%s: key 'tokenizer.ggml.model' is '%s', which is not supported (supported: gpt2, llama)",
       g.path.c_str(), model.c_str());
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
