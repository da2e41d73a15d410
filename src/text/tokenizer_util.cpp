// Tokenizer helpers: UTF-8, Unicode character classes as Rust defines them, the GPT-2 byte <-> char
// tables, and the two open-addressing hash maps used by the BPE model.
#include <utf8proc.h>

#include <array>
#include <cstring>
#include <functional>

#include "text/tokenizer.h"

namespace moe {

namespace tok {

uint32_t utf8_next(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t k = *i;
  uint32_t c = p[k];
  if (c < 0x80) {
    *i = k + 1;
    return c;
  }
  size_t n = utf8_len(static_cast<uint8_t>(c));
  if (k + n > s.size()) {  // truncated (callers pass valid UTF-8; be safe anyway)
    *i = s.size();
    return 0xFFFD;
  }
  if (n == 2)
    c = ((c & 0x1F) << 6) | (p[k + 1] & 0x3F);
  else if (n == 3)
    c = ((c & 0x0F) << 12) | ((p[k + 1] & 0x3F) << 6) | (p[k + 2] & 0x3F);
  else
    c = ((c & 0x07) << 18) | ((p[k + 1] & 0x3F) << 12) | ((p[k + 2] & 0x3F) << 6) |
        (p[k + 3] & 0x3F);
  *i = k + n;
  return c;
}

void utf8_append(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Length of the valid UTF-8 sequence at p[0..n), or 0 if invalid; *bad_len receives the length
// of the maximal invalid subpart to replace by one U+FFFD (Unicode "substitution of maximal
// subparts", which Rust's from_utf8_lossy and WHATWG decoders follow).
size_t utf8_seq(const uint8_t* p, size_t n, size_t* bad_len) {
  uint8_t c = p[0];
  *bad_len = 1;
  if (c < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    need = 2;
  else if (c == 0xE0)
    need = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC)
    need = 3;
  else if (c == 0xED)
    need = 3, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF)
    need = 3;
  else if (c == 0xF0)
    need = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3)
    need = 4;
  else if (c == 0xF4)
    need = 4, hi = 0x8F;
  else
    return 0;
  for (size_t k = 1; k < need; ++k) {
    if (k >= n) return 0;
    uint8_t b = p[k];
    uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return 0;
    *bad_len = k + 1;
  }
  return need;
}

}  // namespace

bool utf8_valid(std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t i = 0, n = bytes.size();
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t bad;
    size_t k = utf8_seq(p + i, n - i, &bad);
    if (k == 0) return false;
    i += k;
  }
  return true;
}

std::string utf8_lossy(std::string_view bytes) {
  if (utf8_valid(bytes)) return std::string(bytes);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  std::string out;
  out.reserve(bytes.size() + 8);
  size_t i = 0, n = bytes.size();
  while (i < n) {
    size_t bad;
    size_t k = utf8_seq(p + i, n - i, &bad);
    if (k > 0) {
      out.append(bytes.data() + i, k);
      i += k;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

bool is_whitespace(uint32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static utf8proc_category_t category(uint32_t cp) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
}

bool is_numeric(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  auto c = category(cp);
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_punctuation(uint32_t cp) {
  if (cp < 0x80)
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  auto c = category(cp);
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool is_mark(uint32_t cp) {
  auto c = category(cp);
  return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

bool is_word_char(uint32_t cp) {
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  if (cp == 0x200C || cp == 0x200D) return true;  // Join_Control
  auto c = category(cp);
  switch (c) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

namespace {

struct ByteTables {
  std::array<std::string, 256> chars;
  std::array<int16_t, 512> bytes;  // code point (< 512) -> byte, -1 if none
  ByteTables() {
    bytes.fill(-1);
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = direct[b] ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      utf8_append(&chars[b], cp);
      bytes[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

const std::string& byte_char(uint8_t b) {
  return byte_tables().chars[b];
}

int byte_of_char(uint32_t cp) {
  return cp < 512 ? byte_tables().bytes[cp] : -1;
}

}  // namespace tok

// ---- TokStrMap
// -----------------------------------------------------------------------------------

static uint64_t str_hash(std::string_view s) {
  // FNV-1a, 64-bit, then a final mix: fast for the short keys of a vocab.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

void TokStrMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  if (cap <= slots.size()) return;
  slots.assign(cap, -1);
  for (size_t i = 0; i < vals.size(); ++i) {
    size_t m = cap - 1, h = str_hash(key(i)) & m;
    while (slots[h] >= 0) h = (h + 1) & m;
    slots[h] = static_cast<int32_t>(i);
  }
  key_off.reserve(n);
  key_len.reserve(n);
  vals.reserve(n);
}

void TokStrMap::put(std::string_view k, int32_t val) {
  if ((vals.size() + 1) * 2 > slots.size()) reserve(std::max<size_t>(16, vals.size() * 2 + 2));
  size_t m = slots.size() - 1, h = str_hash(k) & m;
  while (slots[h] >= 0) {
    if (key(slots[h]) == k) {
      vals[slots[h]] = val;
      return;
    }
    h = (h + 1) & m;
  }
  slots[h] = static_cast<int32_t>(vals.size());
  key_off.push_back(static_cast<uint32_t>(arena.size()));
  key_len.push_back(static_cast<uint32_t>(k.size()));
  arena.append(k);
  vals.push_back(val);
}

int32_t TokStrMap::get(std::string_view k) const {
  if (slots.empty()) return -1;
  size_t m = slots.size() - 1, h = str_hash(k) & m;
  while (slots[h] >= 0) {
    int32_t i = slots[h];
    if (key_len[i] == k.size() && std::memcmp(arena.data() + key_off[i], k.data(), k.size()) == 0)
      return vals[i];
    h = (h + 1) & m;
  }
  return -1;
}

// ---- TokPairMap
// ----------------------------------------------------------------------------------

static uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

static uint64_t pair_hash(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

void TokPairMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  if (cap <= slots.size()) return;
  std::vector<Slot> old = std::move(slots);
  slots.assign(cap, Slot{kEmpty, 0, 0});
  for (const Slot& s : old) {
    if (s.key == kEmpty) continue;
    size_t m = cap - 1, h = pair_hash(s.key) & m;
    while (slots[h].key != kEmpty) h = (h + 1) & m;
    slots[h] = s;
  }
}

void TokPairMap::put(int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
  if ((count + 1) * 2 > slots.size()) reserve(std::max<size_t>(16, count * 2 + 2));
  uint64_t k = pair_key(a, b);
  size_t m = slots.size() - 1, h = pair_hash(k) & m;
  while (slots[h].key != kEmpty) {
    if (slots[h].key == k) {  // a repeated merge: the later one wins, as in Rust's HashMap
      slots[h].rank = rank;
      slots[h].new_id = new_id;
      return;
    }
    h = (h + 1) & m;
  }
  slots[h] = Slot{k, rank, new_id};
  ++count;
}

const TokPairMap::Slot* TokPairMap::get(int32_t a, int32_t b) const {
  if (slots.empty()) return nullptr;
  uint64_t k = pair_key(a, b);
  size_t m = slots.size() - 1, h = pair_hash(k) & m;
  while (slots[h].key != kEmpty) {
    if (slots[h].key == k) return &slots[h];
    h = (h + 1) & m;
  }
  return nullptr;
}

}  // namespace moe
