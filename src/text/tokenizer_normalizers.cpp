// Normalizers of tokenizer.json, as the Rust library applies them to one section of text.
// Each keeps Piece::lead up to date (the leading bytes derived from the input's first character).
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {

namespace tok {

namespace {

size_t first_char_len(const std::string& s) {
  return s.empty() ? 0 : std::min(s.size(), utf8_len(static_cast<uint8_t>(s[0])));
}

bool all_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

std::string unicode_form(const std::string& s, int options) {
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out,
                                    static_cast<utf8proc_option_t>(options));
  if (n < 0) fail("tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(n));
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

// NFC/NFD/NFKC/NFKD of s, normalizing only the non-ASCII runs (each with the ASCII character
// before it, which may compose with a following combining mark). The cuts are exact: an ASCII
// character is a starter without decomposition that never composes with what precedes it.
std::string unicode_form_runs(const std::string& s, int options) {
  std::string out;
  out.reserve(s.size() + 16);
  size_t i = 0, n = s.size();
  while (i < n) {
    size_t j = i;
    while (j < n && static_cast<uint8_t>(s[j]) < 0x80) ++j;
    if (j == n) {
      out.append(s, i, n - i);
      break;
    }
    size_t cs = j > i ? j - 1 : j;
    out.append(s, i, cs - i);
    size_t k = j;
    while (k < n && static_cast<uint8_t>(s[k]) >= 0x80) ++k;
    out += unicode_form(s.substr(cs, k - cs), options);
    i = k;
  }
  return out;
}

void apply_unicode(Piece* p, int options) {
  if (p->text.empty() || all_ascii(p->text)) return;  // ASCII is stable under NFC/NFD/NFKC/NFKD
  std::string out = unicode_form_runs(p->text, options);
  if (p->lead > 0) {
    size_t lead_alone =
        unicode_form(p->text.substr(0, static_cast<size_t>(p->lead)), options).size();
    p->lead = static_cast<int32_t>(std::min(out.size(), std::max(first_char_len(out), lead_alone)));
  }
  p->text = std::move(out);
}

// Rebuilds p->text char by char; fn(cp, &out) appends the replacement of one character.
template <class F>
void map_chars(Piece* p, F fn) {
  std::string out;
  out.reserve(p->text.size() + 8);
  size_t i = 0;
  int32_t lead = 0;
  while (i < p->text.size()) {
    size_t at = i;
    uint32_t cp = utf8_next(p->text, &i);
    size_t before = out.size();
    fn(cp, &out);
    if (static_cast<int64_t>(at) < p->lead) lead += static_cast<int32_t>(out.size() - before);
  }
  p->text = std::move(out);
  p->lead = lead;
}

void lowercase_char(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
  } else if (cp == 0x130) {  // the one unconditional multi-character lowercase mapping
    out->append("i\xCC\x87");
  } else {
    utf8_append(out, static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
  }
}

void replace(Piece* p, const TokPattern& pat, const std::string& content) {
  std::vector<Span> spans;
  regex_find_matches(*pat.re, p->text, &spans);
  bool any = false;
  for (const Span& s : spans) any |= s.match;
  if (!any) return;
  std::string out;
  out.reserve(p->text.size() + 16);
  int32_t lead = 0;
  bool lead_open = p->lead > 0;
  size_t lead_end = static_cast<size_t>(std::max<int32_t>(p->lead, 0));
  for (const Span& s : spans) {
    size_t before = out.size();
    if (s.match)
      out += content;
    else
      out.append(p->text, s.start, s.end - s.start);
    if (!lead_open) continue;
    // Inserted text is aligned with the last byte it replaces (Rust's NormalizedString::replace).
    if (s.end <= lead_end) {
      lead += static_cast<int32_t>(out.size() - before);
    } else {
      if (!s.match && s.start < lead_end) lead += static_cast<int32_t>(lead_end - s.start);
      lead_open = false;
    }
  }
  p->text = std::move(out);
  p->lead = lead;
}

void strip(Piece* p, bool left, bool right) {
  const std::string& s = p->text;
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t j = b;
      if (!is_whitespace(utf8_next(s, &j))) break;
      b = j;
    }
  }
  if (right) {
    while (e > b) {
      size_t j = e - 1;
      while (j > b && (static_cast<uint8_t>(s[j]) & 0xC0) == 0x80) --j;
      size_t k = j;
      if (!is_whitespace(utf8_next(s, &k))) break;
      e = j;
    }
  }
  if (b == 0 && e == s.size()) return;
  p->lead = std::max<int32_t>(
      0, std::min<int32_t>(p->lead - static_cast<int32_t>(b), static_cast<int32_t>(e - b)));
  p->text = s.substr(b, e - b);
}

void nmt_char(uint32_t c, std::string* out) {
  if ((c >= 0x01 && c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || c == 0x8F ||
      c == 0x9F)
    return;
  if (c == 0x09 || c == 0x0A || c == 0x0C || c == 0x0D || c == 0x1680 ||
      (c >= 0x200B && c <= 0x200F) || c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF ||
      c == 0xFFFD) {
    out->push_back(' ');
    return;
  }
  utf8_append(out, c);
}

}  // namespace

void normalize(const TokNormalizer& n, Piece* p) {
  switch (n.kind) {
    case TokNormKind::None:
      return;
    case TokNormKind::Sequence:
      for (const TokNormalizer& c : n.children) normalize(c, p);
      return;
    case TokNormKind::NFC:
      apply_unicode(p, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
      return;
    case TokNormKind::NFD:
      apply_unicode(p, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
      return;
    case TokNormKind::NFKC:
      apply_unicode(p, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
      return;
    case TokNormKind::NFKD:
      apply_unicode(p, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
      return;
    case TokNormKind::Lowercase:
      map_chars(p, lowercase_char);
      return;
    case TokNormKind::Prepend:
      if (!p->text.empty()) {
        p->text.insert(0, n.str);
        if (p->lead > 0) p->lead += static_cast<int32_t>(n.str.size());
      }
      return;
    case TokNormKind::Replace:
      replace(p, n.pattern, n.str);
      return;
    case TokNormKind::Strip:
      strip(p, n.strip_left, n.strip_right);
      return;
    case TokNormKind::StripAccents:
      map_chars(p, [](uint32_t cp, std::string* out) {
        if (!is_mark(cp)) utf8_append(out, cp);
      });
      return;
    case TokNormKind::Nmt:
      map_chars(p, nmt_char);
      return;
    case TokNormKind::ByteLevel:
      map_chars(p, [](uint32_t cp, std::string* out) {
        std::string bytes;
        utf8_append(&bytes, cp);
        for (unsigned char b : bytes) out->append(byte_char(b));
      });
      return;
  }
}

}  // namespace tok

}  // namespace moe
