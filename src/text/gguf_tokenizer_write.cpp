#include "text/gguf_tokenizer_write.h"

#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"
#include "text/gguf_tokenizer.h"

namespace moe {

namespace {

using json = nlohmann::json;
using Kv = std::vector<std::pair<std::string, GgufValue>>;

constexpr int kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUser = 4, kTypeUnused = 5,
              kTypeByte = 6;

GgufValue gv_str(const std::string& s) {
  GgufValue v;
  v.type = GGUF_STRING;
  v.s = s;
  return v;
}

GgufValue gv_scalar(GgufType t, int64_t i) {
  GgufValue v;
  v.type = t;
  v.i = i;
  return v;
}

GgufValue gv_array(GgufType t) {
  GgufValue v;
  v.type = GGUF_ARRAY;
  v.arr_type = t;
  return v;
}

// The "LEFT RIGHT" of a merges entry (a string as written, or a [left, right] pair).
std::string merge_text(const json& m, const std::string& path) {
  if (m.is_string()) return m.get<std::string>();
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return m[0].get<std::string>() + " " + m[1].get<std::string>();
  fail("%s: field 'model.merges': an entry is neither 'LEFT RIGHT' nor a pair of strings",
       path.c_str());
}

bool has_type(const json& node, const char* type, const char* list_key) {
  if (!node.is_object()) return false;
  if (node.value("type", "") == type) return true;
  if (node.contains(list_key))
    for (const json& c : node[list_key])
      if (has_type(c, type, list_key)) return true;
  return false;
}

// A "▁" Prepend normalizer, or a Metaspace pre-tokenizer that prepends.
bool spm_space_prefix(const json& tok) {
  if (has_type(tok.value("normalizer", json()), "Prepend", "normalizers")) return true;
  const json pre = tok.value("pre_tokenizer", json());
  if (!has_type(pre, "Metaspace", "pretokenizers")) return false;
  return pre.value("prepend_scheme", "always") != "never" && pre.value("add_prefix_space", true);
}

bool is_spm(const json& tok) {
  return tok["model"].value("byte_fallback", false) ||
         has_type(tok.value("normalizer", json()), "Prepend", "normalizers") ||
         has_type(tok.value("pre_tokenizer", json()), "Metaspace", "pretokenizers");
}

std::string unk_token(const json& tok) {
  const json u = tok["model"].value("unk_token", json());
  return u.is_string() ? u.get<std::string>() : std::string();
}

// The special token a TemplateProcessing post-processor puts first, or "".
std::string leading_special(const json& tok) {
  const json post = tok.value("post_processor", json());
  if (!post.is_object() || post.value("type", "") != "TemplateProcessing") return "";
  const json single = post.value("single", json::array());
  if (single.empty() || !single[0].contains("SpecialToken")) return "";
  return single[0]["SpecialToken"].value("id", "");
}

struct Vocab {
  std::vector<std::string> tokens;  // (n_vocab)
  std::vector<int64_t> types;       // (n_vocab)
  std::map<std::string, int64_t> ids;
};

Vocab vocab_of(const json& tok, const std::string& path, int64_t n_vocab, bool spm) {
  const json& v = tok["model"]["vocab"];
  if (!v.is_object()) fail("%s: field 'model.vocab' is not an object", path.c_str());
  Vocab out;
  for (auto it = v.begin(); it != v.end(); ++it) out.ids[it.key()] = it.value().get<int64_t>();
  std::map<int64_t, bool> added;  // id -> special
  for (const json& a : tok.value("added_tokens", json::array())) {
    out.ids[a.value("content", "")] = a.value("id", int64_t{-1});
    added[a.value("id", int64_t{-1})] = a.value("special", false);
  }
  out.tokens.resize(static_cast<size_t>(n_vocab));
  out.types.assign(static_cast<size_t>(n_vocab), kTypeUnused);
  for (int64_t i = 0; i < n_vocab; ++i) out.tokens[i] = "[PAD" + std::to_string(i) + "]";
  const std::string unk = unk_token(tok);
  for (const auto& [text, id] : out.ids) {
    if (id < 0 || id >= n_vocab)
      fail("%s: token '%s' has id %lld, outside the model's vocabulary of %lld", path.c_str(),
           text.substr(0, 40).c_str(), static_cast<long long>(id), static_cast<long long>(n_vocab));
    out.tokens[id] = text;
    const bool byte = spm && text.size() == 6 && text.rfind("<0x", 0) == 0 && text[5] == '>';
    out.types[id] = added.count(id) ? (added[id] ? kTypeControl : kTypeUser)
                    : byte          ? kTypeByte
                                    : kTypeNormal;
  }
  if (spm && out.ids.count(unk)) out.types[out.ids[unk]] = kTypeUnknown;
  return out;
}

}  // namespace

void gguf_tokenizer_kv(const std::string& text, const std::string& path, int64_t n_vocab,
                       const std::string& chat_template, Kv* kv) {
  json tok;
  try {
    tok = json::parse(text);
  } catch (const json::exception& e) {
    fail("%s: not valid JSON: %s", path.c_str(), e.what());
  }
  if (!tok.is_object() || !tok.contains("model") || tok["model"].value("type", "") != "BPE")
    fail("%s: field 'model.type' is not BPE; only BPE tokenizers can be written to GGUF",
         path.c_str());
  const bool spm = is_spm(tok);
  std::string pre = "default";
  if (!spm) {
    pre = gguf_pre_name_of(tok.value("pre_tokenizer", json()));
    if (pre.empty())
      fail(
          "%s: field 'pre_tokenizer': this split has no llama.cpp name (known: gpt2, qwen2, "
          "llama-bpe, gpt-4o, deepseek-v3)",
          path.c_str());
  }
  const Vocab v = vocab_of(tok, path, n_vocab, spm);
  GgufValue tokens = gv_array(GGUF_STRING), types = gv_array(GGUF_I32);
  GgufValue merges = gv_array(GGUF_STRING);
  tokens.strs = v.tokens;
  types.ints = v.types;
  std::map<std::string, int64_t> first_rank;  // piece -> rank of the first merge that makes it
  int64_t rank = 0;
  for (const json& m : tok["model"].value("merges", json::array())) {
    std::string s = merge_text(m, path);
    const size_t sp = s.find(' ');
    if (sp == std::string::npos)
      fail("%s: field 'model.merges': entry '%s' is not 'LEFT RIGHT'", path.c_str(),
           s.substr(0, 40).c_str());
    first_rank.emplace(s.substr(0, sp) + s.substr(sp + 1), rank++);
    if (!spm) merges.strs.push_back(std::move(s));
  }
  kv->push_back({"tokenizer.ggml.model", gv_str(spm ? "llama" : "gpt2")});
  kv->push_back({"tokenizer.ggml.pre", gv_str(pre)});
  kv->push_back({"tokenizer.ggml.tokens", tokens});
  kv->push_back({"tokenizer.ggml.token_type", types});
  if (spm) {
    GgufValue scores = gv_array(GGUF_F32);
    for (const std::string& t : v.tokens) {
      auto it = first_rank.find(t);
      scores.floats.push_back(it == first_rank.end() ? -1e9 : -static_cast<double>(it->second));
    }
    kv->push_back({"tokenizer.ggml.scores", scores});
    kv->push_back({"tokenizer.ggml.add_space_prefix", gv_scalar(GGUF_BOOL, spm_space_prefix(tok))});
    const std::string unk = unk_token(tok);
    if (v.ids.count(unk))
      kv->push_back({"tokenizer.ggml.unknown_token_id", gv_scalar(GGUF_U32, v.ids.at(unk))});
  } else {
    kv->push_back({"tokenizer.ggml.merges", merges});
  }
  const std::string lead = leading_special(tok);
  kv->push_back({"tokenizer.ggml.add_bos_token", gv_scalar(GGUF_BOOL, !lead.empty())});
  bool has_bos = false;  // the model's config may have given it already
  for (const auto& e : *kv) has_bos |= e.first == "tokenizer.ggml.bos_token_id";
  if (!has_bos && !lead.empty() && v.ids.count(lead))
    kv->push_back({"tokenizer.ggml.bos_token_id", gv_scalar(GGUF_U32, v.ids.at(lead))});
  if (!chat_template.empty()) kv->push_back({"tokenizer.chat_template", gv_str(chat_template)});
}

std::string hf_chat_template(const std::string& dir) {
  const std::string cfg_path = dir + "/tokenizer_config.json";
  if (file_exists(cfg_path)) {
    json cfg;
    try {
      cfg = json::parse(read_text_file(cfg_path));
    } catch (const json::exception& e) {
      fail("%s: not valid JSON: %s", cfg_path.c_str(), e.what());
    }
    const json t = cfg.value("chat_template", json());
    if (t.is_string()) return t.get<std::string>();
    if (t.is_array())
      for (const json& e : t)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template"))
          return e["template"].get<std::string>();
  }
  const std::string jinja = dir + "/chat_template.jinja";
  return file_exists(jinja) ? read_text_file(jinja) : std::string();
}

}  // namespace moe
