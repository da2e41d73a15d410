#include "text/bpe_train.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/error.h"

namespace moe {

namespace {

// GPT-2's pre-tokenizer pattern (what ByteLevel with use_regex = true applies).
const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// bytes_to_unicode: printable bytes map to themselves, the others to U+0100 onwards.
const std::vector<std::string>& byte_chars() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : 256u + static_cast<uint32_t>(n++);
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      t[b] = s;
    }
    return t;
  }();
  return table;
}

struct Regex {
  pcre2_code* code = nullptr;
  Regex() {
    int err;
    PCRE2_SIZE off;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    MOE_CHECK(code != nullptr);
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code); }
};

const Regex& gpt2_regex() {
  static const Regex r;
  return r;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Applies merges in rank order to a byte sequence.
void encode_piece(const BpeModel& m, std::string_view piece, std::vector<int32_t>* out) {
  std::vector<int32_t> s(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) s[i] = static_cast<uint8_t>(piece[i]);
  while (s.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      auto it = m.rank.find(pair_key(s[i], s[i + 1]));
      if (it != m.rank.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT32_MAX) break;
    const int32_t a = s[best], b = s[best + 1], z = 256 + best_rank;
    std::vector<int32_t> t;
    t.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
        t.push_back(z);
        ++i;
      } else {
        t.push_back(s[i]);
      }
    }
    s.swap(t);
  }
  out->insert(out->end(), s.begin(), s.end());
}

}  // namespace

int32_t BpeModel::special_id(const std::string& s) const {
  for (size_t i = 0; i < specials.size(); ++i)
    if (specials[i] == s) return static_cast<int32_t>(256 + merges.size() + i);
  return -1;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; ok && k < n; ++k) {
      const uint8_t d = static_cast<uint8_t>(s[i + k]);
      ok = (d & 0xC0) == 0x80;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (ok) {
      // reject overlong forms, surrogates and values past U+10FFFF
      ok = !((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
             (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF);
    }
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

void bpe_pretokenize(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>* spans) {
  spans->clear();
  const Regex& re = gpt2_regex();
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re.code, nullptr);
  PCRE2_SIZE pos = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  uint32_t opts = 0;  // the first match validates the whole subject as UTF-8
  while (pos < text.size()) {
    int rc = pcre2_match(re.code, subject, text.size(), pos, opts, md, nullptr);
    opts = PCRE2_NO_UTF_CHECK;
    if (rc < 0) {
      pcre2_match_data_free(md);
      if (rc != PCRE2_ERROR_NOMATCH) fail("text to tokenize is not valid UTF-8 (PCRE2 error %d)", rc);
      return;
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {  // cannot happen with this pattern; guard against loops
      ++pos;
      continue;
    }
    spans->push_back({static_cast<uint32_t>(ov[0]), static_cast<uint32_t>(ov[1])});
    pos = ov[1];
  }
  pcre2_match_data_free(md);
}

void bpe_train(BpeModel* m, const std::vector<std::string_view>& texts, const BpeTrainParams& p) {
  const int n_special = static_cast<int>(p.specials.size());
  if (p.vocab_size < 256 + n_special)
    fail("--vocab %d is too small: byte-level BPE needs at least %d (256 bytes + %d special)",
         p.vocab_size, 256 + n_special, n_special);
  // 1. Word counts.
  std::unordered_map<std::string, int64_t> counts;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  for (std::string_view t : texts) {
    std::string clean = utf8_sanitize(t);
    bpe_pretokenize(clean, &spans);
    for (auto [b, e] : spans) ++counts[clean.substr(b, e - b)];
  }
  // Sorted for determinism.
  std::vector<std::pair<std::string, int64_t>> wc(counts.begin(), counts.end());
  std::sort(wc.begin(), wc.end());
  std::vector<std::vector<int32_t>> words(wc.size());
  std::vector<int64_t> freq(wc.size());
  for (size_t w = 0; w < wc.size(); ++w) {
    freq[w] = wc[w].second;
    for (char ch : wc[w].first) words[w].push_back(static_cast<uint8_t>(ch));
  }
  // 2. Pair statistics.
  std::unordered_map<uint64_t, int64_t> pc;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < words.size(); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t k = pair_key(words[w][i], words[w][i + 1]);
      pc[k] += freq[w];
      where[k].push_back(static_cast<int32_t>(w));
    }
  // Max-heap on count; ties go to the smaller key.
  using Item = std::pair<int64_t, uint64_t>;
  auto cmp = [](const Item& x, const Item& y) {
    return x.first < y.first || (x.first == y.first && x.second > y.second);
  };
  std::priority_queue<Item, std::vector<Item>, decltype(cmp)> heap(cmp);
  for (auto& kv : pc) heap.push({kv.second, kv.first});
  m->merges.clear();
  m->rank.clear();
  const int max_merges = p.vocab_size - 256 - n_special;
  std::vector<int32_t> seen(words.size(), -1);
  while (static_cast<int>(m->merges.size()) < max_merges && !heap.empty()) {
    auto [cnt, key] = heap.top();
    heap.pop();
    auto it = pc.find(key);
    const int64_t cur = it == pc.end() ? 0 : it->second;
    if (cur != cnt) {
      if (cur > 0) heap.push({cur, key});
      continue;
    }
    if (cnt < p.min_frequency) break;
    const int32_t a = static_cast<int32_t>(key >> 32), b = static_cast<int32_t>(key & 0xffffffffu);
    const int32_t z = 256 + static_cast<int32_t>(m->merges.size());
    m->rank[key] = static_cast<int32_t>(m->merges.size());
    m->merges.push_back({a, b});
    std::vector<int32_t> occ = std::move(where[key]);
    where.erase(key);
    std::map<uint64_t, int64_t> changed;
    for (int32_t w : occ) {
      if (seen[w] == z) continue;
      seen[w] = z;
      std::vector<int32_t>& s = words[w];
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        pc[k] -= freq[w];
        changed[k];
      }
      std::vector<int32_t> t;
      t.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          t.push_back(z);
          ++i;
        } else {
          t.push_back(s[i]);
        }
      }
      s.swap(t);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        pc[k] += freq[w];
        changed[k];
        if (s[i] == z || s[i + 1] == z) where[k].push_back(w);
      }
    }
    for (auto& kv : changed) {
      const int64_t c = pc[kv.first];
      if (c <= 0) pc.erase(kv.first);
      else heap.push({c, kv.first});
    }
  }
  // 3. Token strings.
  const auto& bc = byte_chars();
  m->tokens.clear();
  for (int b = 0; b < 256; ++b) m->tokens.push_back(bc[b]);
  for (auto [a, b] : m->merges) m->tokens.push_back(m->tokens[a] + m->tokens[b]);
  m->specials = p.specials;
  for (const std::string& s : p.specials) m->tokens.push_back(s);
}

std::string bpe_tokenizer_json(const BpeModel& m) {
  using json = nlohmann::ordered_json;
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  json added = json::array();
  for (const std::string& s : m.specials)
    added.push_back({{"id", m.special_id(s)}, {"content", s}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                        {"use_regex", true}};
  j["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                         {"trim_offsets", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                  {"use_regex", true}};
  json vocab = json::object();
  const size_t n_model = 256 + m.merges.size();
  for (size_t i = 0; i < n_model; ++i) vocab[m.tokens[i]] = i;
  json merges = json::array();
  for (auto [a, b] : m.merges) merges.push_back(m.tokens[a] + " " + m.tokens[b]);
  j["model"] = {{"type", "BPE"},        {"dropout", nullptr},
                {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                {"byte_fallback", false}, {"ignore_merges", false},
                {"vocab", vocab},       {"merges", merges}};
  return j.dump(1) + "\n";
}

void bpe_encode(const BpeModel& m, std::string_view text, std::vector<int32_t>* ids,
                std::vector<uint32_t>* piece_begin,
                std::unordered_map<std::string, std::vector<int32_t>>* cache) {
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  bpe_pretokenize(text, &spans);
  std::vector<int32_t> tmp;
  for (auto [b, e] : spans) {
    std::string piece(text.substr(b, e - b));
    const std::vector<int32_t>* enc = nullptr;
    if (cache) {
      auto it = cache->find(piece);
      if (it == cache->end()) {
        std::vector<int32_t> v;
        encode_piece(m, piece, &v);
        it = cache->emplace(piece, std::move(v)).first;
      }
      enc = &it->second;
    } else {
      tmp.clear();
      encode_piece(m, piece, &tmp);
      enc = &tmp;
    }
    ids->insert(ids->end(), enc->begin(), enc->end());
    if (piece_begin) piece_begin->insert(piece_begin->end(), enc->size(), b);
  }
}

}  // namespace moe
