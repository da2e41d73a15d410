// Loading tokenizer.json into a Tokenizer. Every problem is a MoeError whose one-line message
// names the file and the component, e.g.
//   "tokenizer.json: pre_tokenizer.pretokenizers[1]: unknown type 'Foo'".
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {

namespace {

using json = nlohmann::json;

struct Ctx {
  std::string file;
  [[noreturn]] void error(const std::string& where, const std::string& what) const {
    fail("%s: %s: %s", file.c_str(), where.c_str(), what.c_str());
  }
};

std::string type_name(const json& j) {
  return j.is_null()      ? "null"
         : j.is_boolean() ? "a boolean"
         : j.is_number()  ? "a number"
         : j.is_string()  ? "a string"
         : j.is_array()   ? "an array"
                          : "an object";
}

const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool get_bool(const Ctx& c, const json& obj, const char* key, bool def, const std::string& where) {
  const json* v = field(obj, key);
  if (!v || v->is_null()) return def;
  if (!v->is_boolean()) c.error(where + "." + key, "expected a boolean, got " + type_name(*v));
  return v->get<bool>();
}

std::string get_str(const Ctx& c, const json& obj, const char* key, const std::string& where,
                    const std::string* def = nullptr) {
  const json* v = field(obj, key);
  if (!v || v->is_null()) {
    if (def) return *def;
    c.error(where + "." + key, "missing (expected a string)");
  }
  if (!v->is_string()) c.error(where + "." + key, "expected a string, got " + type_name(*v));
  return v->get<std::string>();
}

int64_t get_int(const Ctx& c, const json& v, const std::string& where) {
  if (!v.is_number_integer()) c.error(where, "expected an integer, got " + type_name(v));
  return v.get<int64_t>();
}

size_t get_size(const Ctx& c, const json& obj, const char* key, size_t def,
                const std::string& where) {
  const json* v = field(obj, key);
  if (!v || v->is_null()) return def;
  int64_t n = get_int(c, *v, where + "." + key);
  if (n < 0) c.error(where + "." + key, "must be >= 0");
  return static_cast<size_t>(n);
}

int32_t get_id(const Ctx& c, const json& v, const std::string& where) {
  int64_t n = get_int(c, v, where);
  if (n < 0 || n > 2147483647) c.error(where, "token id " + std::to_string(n) + " is out of range");
  return static_cast<int32_t>(n);
}

const json& get_array(const Ctx& c, const json& obj, const char* key, const std::string& where) {
  const json* v = field(obj, key);
  if (!v) c.error(where + "." + key, "missing (expected an array)");
  if (!v->is_array()) c.error(where + "." + key, "expected an array, got " + type_name(*v));
  return *v;
}

// The component's "type"; the object itself must be a JSON object.
std::string get_type(const Ctx& c, const json& j, const std::string& where) {
  if (!j.is_object()) c.error(where, "expected an object, got " + type_name(j));
  const json* t = field(j, "type");
  if (!t) c.error(where, "missing 'type'");
  if (!t->is_string()) c.error(where + ".type", "expected a string, got " + type_name(*t));
  return t->get<std::string>();
}

std::string one_char(const Ctx& c, const std::string& s, const std::string& where) {
  size_t i = 0;
  if (!s.empty()) tok::utf8_next(s, &i);
  if (s.empty() || i != s.size()) c.error(where, "expected exactly one character, got '" + s + "'");
  return s;
}

TokPattern get_pattern(const Ctx& c, const json& obj, const std::string& where) {
  const json* p = field(obj, "pattern");
  std::string w = where + ".pattern";
  if (!p) c.error(w, "missing");
  if (!p->is_object() || p->size() != 1)
    c.error(w, "expected {\"String\": ...} or {\"Regex\": ...}");
  TokPattern tp;
  if (const json* s = field(*p, "String")) {
    if (!s->is_string()) c.error(w + ".String", "expected a string");
    tp.text = s->get<std::string>();
    tp.re = tok::regex_literal(tp.text, c.file + ": " + w);
  } else if (const json* r = field(*p, "Regex")) {
    if (!r->is_string()) c.error(w + ".Regex", "expected a string");
    tp.is_regex = true;
    tp.text = r->get<std::string>();
    tp.re = tok::regex_compile(tp.text, c.file + ": " + w);
  } else {
    c.error(w, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  return tp;
}

TokSplitBehavior get_behavior(const Ctx& c, const json& obj, const std::string& where,
                              TokSplitBehavior def) {
  const json* v = field(obj, "behavior");
  if (!v || v->is_null()) return def;
  std::string b = v->is_string() ? v->get<std::string>() : "";
  if (b == "Removed") return TokSplitBehavior::Removed;
  if (b == "Isolated") return TokSplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return TokSplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return TokSplitBehavior::MergedWithNext;
  if (b == "Contiguous") return TokSplitBehavior::Contiguous;
  c.error(where + ".behavior", "unknown behavior " + v->dump());
}

TokPrependScheme get_prepend_scheme(const Ctx& c, const json& obj, const std::string& where) {
  const json* v = field(obj, "prepend_scheme");
  const json* aps = field(obj, "add_prefix_space");
  bool has_aps = aps && aps->is_boolean();
  if (!v || v->is_null()) {
    return has_aps && !aps->get<bool>() ? TokPrependScheme::Never : TokPrependScheme::Always;
  }
  std::string s = v->is_string() ? v->get<std::string>() : "";
  TokPrependScheme ps;
  if (s == "always")
    ps = TokPrependScheme::Always;
  else if (s == "first")
    ps = TokPrependScheme::First;
  else if (s == "never")
    ps = TokPrependScheme::Never;
  else
    c.error(where + ".prepend_scheme", "unknown scheme " + v->dump());
  if (has_aps && !aps->get<bool>() && ps != TokPrependScheme::Never)
    c.error(where, "add_prefix_space does not match declared prepend_scheme");
  return ps;
}

// ---- components ----

TokNormalizer parse_normalizer(const Ctx& c, const json& j, const std::string& w) {
  TokNormalizer n;
  if (j.is_null()) return n;
  std::string type = get_type(c, j, w);
  if (type == "Sequence") {
    n.kind = TokNormKind::Sequence;
    const json& arr = get_array(c, j, "normalizers", w);
    for (size_t i = 0; i < arr.size(); ++i)
      n.children.push_back(
          parse_normalizer(c, arr[i], w + ".normalizers[" + std::to_string(i) + "]"));
  } else if (type == "NFC") {
    n.kind = TokNormKind::NFC;
  } else if (type == "NFD") {
    n.kind = TokNormKind::NFD;
  } else if (type == "NFKC") {
    n.kind = TokNormKind::NFKC;
  } else if (type == "NFKD") {
    n.kind = TokNormKind::NFKD;
  } else if (type == "Lowercase") {
    n.kind = TokNormKind::Lowercase;
  } else if (type == "Prepend") {
    n.kind = TokNormKind::Prepend;
    n.str = get_str(c, j, "prepend", w);
  } else if (type == "Replace") {
    n.kind = TokNormKind::Replace;
    n.pattern = get_pattern(c, j, w);
    n.str = get_str(c, j, "content", w);
  } else if (type == "Strip") {
    n.kind = TokNormKind::Strip;
    n.strip_left = get_bool(c, j, "strip_left", true, w);
    n.strip_right = get_bool(c, j, "strip_right", true, w);
  } else if (type == "StripAccents") {
    n.kind = TokNormKind::StripAccents;
  } else if (type == "Nmt") {
    n.kind = TokNormKind::Nmt;
  } else if (type == "ByteLevel") {
    n.kind = TokNormKind::ByteLevel;
  } else if (type == "Precompiled") {
    c.error(
        w,
        "type 'Precompiled' (sentencepiece precompiled charsmap) is not supported; none of "
        "the supported model families (Llama, Mixtral, Qwen, DeepSeek, gpt-oss, Gemma) uses it");
  } else if (type == "BertNormalizer") {
    c.error(w, "type 'BertNormalizer' is not supported");
  } else {
    c.error(w, "unknown type '" + type + "'");
  }
  return n;
}

TokPreTokenizer parse_pre_tokenizer(const Ctx& c, const json& j, const std::string& w) {
  TokPreTokenizer p;
  if (j.is_null()) return p;
  std::string type = get_type(c, j, w);
  if (type == "Sequence") {
    p.kind = TokPreKind::Sequence;
    const json& arr = get_array(c, j, "pretokenizers", w);
    for (size_t i = 0; i < arr.size(); ++i)
      p.children.push_back(
          parse_pre_tokenizer(c, arr[i], w + ".pretokenizers[" + std::to_string(i) + "]"));
  } else if (type == "ByteLevel") {
    p.kind = TokPreKind::ByteLevel;
    p.add_prefix_space = get_bool(c, j, "add_prefix_space", true, w);
    p.use_regex = get_bool(c, j, "use_regex", true, w);
  } else if (type == "Split") {
    p.kind = TokPreKind::Split;
    p.pattern = get_pattern(c, j, w);
    if (!field(j, "behavior")) c.error(w + ".behavior", "missing");
    p.behavior = get_behavior(c, j, w, TokSplitBehavior::Isolated);
    p.invert = get_bool(c, j, "invert", false, w);
  } else if (type == "Metaspace") {
    p.kind = TokPreKind::Metaspace;
    p.replacement = one_char(c, get_str(c, j, "replacement", w), w + ".replacement");
    p.prepend_scheme = get_prepend_scheme(c, j, w);
    p.split = get_bool(c, j, "split", true, w);
  } else if (type == "Digits") {
    p.kind = TokPreKind::Digits;
    p.individual_digits = get_bool(c, j, "individual_digits", false, w);
  } else if (type == "Whitespace") {
    p.kind = TokPreKind::Whitespace;
  } else if (type == "WhitespaceSplit") {
    p.kind = TokPreKind::WhitespaceSplit;
  } else if (type == "Punctuation") {
    p.kind = TokPreKind::Punctuation;
    p.behavior = get_behavior(c, j, w, TokSplitBehavior::Isolated);
  } else if (type == "BertPreTokenizer") {
    p.kind = TokPreKind::Bert;
  } else if (type == "Delimiter" || type == "UnicodeScripts" || type == "FixedLength") {
    c.error(w, "type '" + type + "' is not supported");
  } else {
    c.error(w, "unknown type '" + type + "'");
  }
  return p;
}

TokDecoder parse_decoder(const Ctx& c, const json& j, const std::string& w) {
  TokDecoder d;
  if (j.is_null()) return d;
  std::string type = get_type(c, j, w);
  if (type == "Sequence") {
    d.kind = TokDecKind::Sequence;
    const json& arr = get_array(c, j, "decoders", w);
    for (size_t i = 0; i < arr.size(); ++i)
      d.children.push_back(parse_decoder(c, arr[i], w + ".decoders[" + std::to_string(i) + "]"));
  } else if (type == "ByteLevel") {
    d.kind = TokDecKind::ByteLevel;
  } else if (type == "Metaspace") {
    d.kind = TokDecKind::Metaspace;
    d.str = one_char(c, get_str(c, j, "replacement", w), w + ".replacement");
    d.prepend_scheme = get_prepend_scheme(c, j, w);
  } else if (type == "ByteFallback") {
    d.kind = TokDecKind::ByteFallback;
  } else if (type == "Fuse") {
    d.kind = TokDecKind::Fuse;
  } else if (type == "Strip") {
    d.kind = TokDecKind::Strip;
    d.str = one_char(c, get_str(c, j, "content", w), w + ".content");
    d.start = get_size(c, j, "start", 0, w);
    d.stop = get_size(c, j, "stop", 0, w);
  } else if (type == "Replace") {
    d.kind = TokDecKind::Replace;
    d.pattern = get_pattern(c, j, w);
    d.str = get_str(c, j, "content", w);
  } else if (type == "BPEDecoder") {
    d.kind = TokDecKind::BPEDecoder;
    std::string def = "</w>";
    d.str = get_str(c, j, "suffix", w, &def);
  } else if (type == "WordPiece" || type == "CTC") {
    c.error(w, "type '" + type + "' is not supported");
  } else {
    c.error(w, "unknown type '" + type + "'");
  }
  return d;
}

std::vector<TokTemplatePiece> parse_template(
    const Ctx& c, const json& j, const std::string& w,
    const std::unordered_map<std::string, std::vector<int32_t>>& specials) {
  std::vector<TokTemplatePiece> out;
  std::vector<json> items;
  if (j.is_string()) {  // "[CLS] $A [SEP]"
    std::istringstream ss(j.get<std::string>());
    std::string word;
    while (ss >> word) items.emplace_back(word);
  } else if (j.is_array()) {
    items.assign(j.begin(), j.end());
  } else {
    c.error(w, "expected an array or a string, got " + type_name(j));
  }
  for (size_t i = 0; i < items.size(); ++i) {
    std::string wi = w + "[" + std::to_string(i) + "]";
    const json& it = items[i];
    TokTemplatePiece p;
    std::string special_name;
    if (it.is_string()) {  // "$A", "$B:1", "$0", "[CLS]", "[SEP]:1"
      std::string s = it.get<std::string>();
      std::string id = s.substr(0, s.find(':'));
      if (!id.empty() && id[0] == '$') {
        std::string rest = id.substr(1);
        p.sequence = (rest == "B" || rest == "b") ? 1 : 0;
        bool ok = rest.empty() || rest == "A" || rest == "a" || p.sequence == 1 ||
                  rest.find_first_not_of("0123456789") == std::string::npos;
        if (!ok) c.error(wi, "cannot build a template piece from '" + s + "'");
      } else {
        p.is_special = true;
        special_name = id;
      }
    } else if (it.is_object() && field(it, "Sequence")) {
      const json& sq = *field(it, "Sequence");
      std::string id = get_str(c, sq, "id", wi + ".Sequence");
      if (id != "A" && id != "B")
        c.error(wi + ".Sequence.id", "expected 'A' or 'B', got '" + id + "'");
      p.sequence = id == "B" ? 1 : 0;
    } else if (it.is_object() && field(it, "SpecialToken")) {
      p.is_special = true;
      special_name = get_str(c, *field(it, "SpecialToken"), "id", wi + ".SpecialToken");
    } else {
      c.error(wi, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    if (p.is_special) {
      auto sp = specials.find(special_name);
      if (sp == specials.end())
        c.error(wi, "special token '" + special_name + "' is missing from special_tokens");
      p.ids = sp->second;
    }
    out.push_back(std::move(p));
  }
  return out;
}

int32_t special_pair_id(const Ctx& c, const json& j, const char* key, const std::string& w) {
  const json* v = field(j, key);
  if (!v || !v->is_array() || v->size() != 2 || !(*v)[0].is_string())
    c.error(w + "." + key, "expected [token, id]");
  return get_id(c, (*v)[1], w + "." + key + "[1]");
}

TokPostProcessor parse_post_processor(const Ctx& c, const json& j, const std::string& w) {
  TokPostProcessor p;
  if (j.is_null()) return p;
  std::string type = get_type(c, j, w);
  if (type == "Sequence") {
    p.kind = TokPostKind::Sequence;
    const json& arr = get_array(c, j, "processors", w);
    for (size_t i = 0; i < arr.size(); ++i)
      p.children.push_back(
          parse_post_processor(c, arr[i], w + ".processors[" + std::to_string(i) + "]"));
  } else if (type == "ByteLevel") {
    p.kind = TokPostKind::ByteLevel;
  } else if (type == "TemplateProcessing") {
    p.kind = TokPostKind::Template;
    std::unordered_map<std::string, std::vector<int32_t>> specials;
    if (const json* st = field(j, "special_tokens"); st && !st->is_null()) {
      if (!st->is_object()) c.error(w + ".special_tokens", "expected an object");
      for (auto it = st->begin(); it != st->end(); ++it) {
        std::string ws = w + ".special_tokens['" + it.key() + "']";
        if (!it->is_object()) c.error(ws, "expected an object");
        const json& ids = get_array(c, *it, "ids", ws);
        std::vector<int32_t> v;
        for (size_t k = 0; k < ids.size(); ++k)
          v.push_back(get_id(c, ids[k], ws + ".ids[" + std::to_string(k) + "]"));
        specials[it.key()] = std::move(v);
      }
    }
    const json* single = field(j, "single");
    if (!single) c.error(w + ".single", "missing");
    p.single = parse_template(c, *single, w + ".single", specials);
    if (const json* pair = field(j, "pair"); pair && !pair->is_null())
      p.pair = parse_template(c, *pair, w + ".pair", specials);
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    p.kind = type == "BertProcessing" ? TokPostKind::Bert : TokPostKind::Roberta;
    p.sep_id = special_pair_id(c, j, "sep", w);
    p.cls_id = special_pair_id(c, j, "cls", w);
  } else {
    c.error(w, "unknown type '" + type + "'");
  }
  return p;
}

void parse_model(const Ctx& c, const json& j, TokBpe* m) {
  const std::string w = "model";
  if (!j.is_object()) c.error(w, "expected an object, got " + type_name(j));
  std::string type = "BPE";
  if (field(j, "type")) type = get_type(c, j, w);
  if (type != "BPE") c.error(w, "type '" + type + "' is not supported (only BPE models are)");
  if (const json* d = field(j, "dropout"); d && !d->is_null()) {
    if (!d->is_number()) c.error(w + ".dropout", "expected a number or null");
    if (d->get<double>() != 0.0)
      c.error(w + ".dropout", "BPE dropout must be null (encoding would not be deterministic)");
  }
  std::string empty;
  if (const json* u = field(j, "unk_token"); u && !u->is_null()) {
    m->unk_token = get_str(c, j, "unk_token", w);
    m->has_unk = true;
  }
  m->prefix = get_str(c, j, "continuing_subword_prefix", w, &empty);
  m->suffix = get_str(c, j, "end_of_word_suffix", w, &empty);
  m->fuse_unk = get_bool(c, j, "fuse_unk", false, w);
  m->byte_fallback = get_bool(c, j, "byte_fallback", false, w);
  m->ignore_merges = get_bool(c, j, "ignore_merges", false, w);

  const json* vocab = field(j, "vocab");
  if (!vocab) c.error(w + ".vocab", "missing");
  if (!vocab->is_object()) c.error(w + ".vocab", "expected an object, got " + type_name(*vocab));
  m->vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const json& v = it.value();
    int64_t id = v.is_number_integer() ? v.get<int64_t>() : -1;
    if (id < 0 || id > 2147483647) get_id(c, v, w + ".vocab['" + it.key() + "']");  // throws
    m->vocab.put(it.key(), static_cast<int32_t>(id));
  }

  std::vector<std::pair<std::string, std::string>> merges;
  if (const json* mj = field(j, "merges"); mj && !mj->is_null()) {
    if (!mj->is_array()) c.error(w + ".merges", "expected an array, got " + type_name(*mj));
    merges.reserve(mj->size());
    for (size_t i = 0; i < mj->size(); ++i) {
      const json& e = (*mj)[i];
      auto wi = [&]() { return w + ".merges[" + std::to_string(i) + "]"; };
      if (e.is_string()) {  // "a b": exactly two parts (Rust's BadMerges otherwise)
        const std::string& s = e.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          c.error(wi(), "expected \"a b\" (two tokens separated by one space), got '" + s + "'");
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        c.error(wi(), "expected \"a b\" or [\"a\", \"b\"]");
      }
    }
  }
  tok::bpe_build(m, merges, c.file + ": " + w + ".merges");
}

// Rust's AddedVocabulary::add_tokens at deserialization: ids come from the vocab when the content
// is there, otherwise they are assigned in order from the vocab size.
void parse_added_tokens(const Ctx& c, const json* arr, Tokenizer* t) {
  if (!arr || arr->is_null()) return;
  if (!arr->is_array()) c.error("added_tokens", "expected an array, got " + type_name(*arr));
  int32_t next_id = static_cast<int32_t>(t->model.vocab.size());
  for (size_t i = 0; i < arr->size(); ++i) {
    const json& e = (*arr)[i];
    std::string w = "added_tokens[" + std::to_string(i) + "]";
    if (!e.is_object()) c.error(w, "expected an object, got " + type_name(e));
    TokAddedToken a;
    a.content = get_str(c, e, "content", w);
    if (const json* id = field(e, "id"))
      get_id(c, *id, w + ".id");
    else
      c.error(w + ".id", "missing");
    a.special = get_bool(c, e, "special", false, w);
    a.single_word = get_bool(c, e, "single_word", false, w);
    a.lstrip = get_bool(c, e, "lstrip", false, w);
    a.rstrip = get_bool(c, e, "rstrip", false, w);
    a.normalized = get_bool(c, e, "normalized", !a.special, w);
    if (a.content.empty()) continue;
    auto known = t->added_by_content.find(a.content);
    if (known != t->added_by_content.end()) {
      a.id = known->second;
    } else {
      a.id = t->model.vocab.get(a.content);
      if (a.id < 0) a.id = next_id++;
    }
    a.match = a.content;
    if (a.normalized) {
      tok::Piece p;
      p.text = a.content;
      tok::normalize(t->normalizer, &p);
      a.match = p.text;
    }
    t->added_by_content[a.content] = a.id;
    if (a.special) t->special_set.insert(a.content);
    auto have = t->added_by_id.find(a.id);
    if (have != t->added_by_id.end()) {
      t->added[have->second] = a;  // same id again: the later definition wins
    } else {
      t->added_by_id[a.id] = static_cast<int32_t>(t->added.size());
      t->added.push_back(a);
    }
  }
}

}  // namespace

void tokenizer_load_json(Tokenizer* t, const std::string& text, const std::string& path) {
  Ctx c{path};
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    std::string msg = e.what();
    for (char& ch : msg)
      if (ch == '\n' || ch == '\r') ch = ' ';
    fail("%s: malformed JSON: %s", path.c_str(), msg.c_str());
  }
  if (!j.is_object()) fail("%s: expected a JSON object at the top level", path.c_str());
  Tokenizer nt;  // built aside: *t is left untouched on error
  nt.path = path;
  if (const json* v = field(j, "version"); v && !(v->is_string() && v->get<std::string>() == "1.0"))
    c.error("version", "unknown tokenizer version " + v->dump());
  if (const json* v = field(j, "truncation"); v && !v->is_null())
    c.error("truncation", "truncation is not supported (expected null)");
  if (const json* v = field(j, "padding"); v && !v->is_null())
    c.error("padding", "padding is not supported (expected null)");
  const json* model = field(j, "model");
  if (!model) c.error("model", "missing");
  static const json kNull;
  const json* n = field(j, "normalizer");
  nt.normalizer = parse_normalizer(c, n ? *n : kNull, "normalizer");
  const json* pt = field(j, "pre_tokenizer");
  nt.pre_tokenizer = parse_pre_tokenizer(c, pt ? *pt : kNull, "pre_tokenizer");
  parse_model(c, *model, &nt.model);
  const json* pp = field(j, "post_processor");
  nt.post_processor = parse_post_processor(c, pp ? *pp : kNull, "post_processor");
  const json* d = field(j, "decoder");
  nt.decoder = parse_decoder(c, d ? *d : kNull, "decoder");
  parse_added_tokens(c, field(j, "added_tokens"), &nt);
  tok::matcher_build(&nt.raw_matcher, nt.added, false);
  tok::matcher_build(&nt.norm_matcher, nt.added, true);
  nt.cache = tok::bpe_cache_new();
  *t = std::move(nt);
}

void tokenizer_load(Tokenizer* t, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("%s: cannot open the tokenizer file", path.c_str());
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("%s: read error", path.c_str());
  tokenizer_load_json(t, ss.str(), path);
}

}  // namespace moe
