// Python str semantics for the Jinja engine, see jinja_str.h.
#include "text/jinja_str.h"

#include <utf8proc.h>

namespace moe::jinja {

namespace {

bool is_cased_upper(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LU ||
         utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LT;
}
bool is_cased_lower(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LL;
}
bool is_cased(char32_t c) {
  return is_cased_upper(c) || is_cased_lower(c);
}
bool is_alpha(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
         cat == UTF8PROC_CATEGORY_LT || cat == UTF8PROC_CATEGORY_LM || cat == UTF8PROC_CATEGORY_LO;
}
bool is_decimal(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
}
bool is_numeric(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}
char32_t upper(char32_t c) {
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}
char32_t lower(char32_t c) {
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}
char32_t title(char32_t c) {
  return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c)));
}

bool all_ascii(const std::string& s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

}  // namespace

int64_t str_len(const std::string& s) {
  int64_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

std::string str_strip(const std::string& s, const std::string* chars, bool left, bool right) {
  std::u32string u = utf8_decode(s);
  std::u32string set = chars ? utf8_decode(*chars) : std::u32string();
  auto strip = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : is_py_space(c);
  };
  size_t a = 0, b = u.size();
  if (left)
    while (a < b && strip(u[a])) ++a;
  if (right)
    while (b > a && strip(u[b - 1])) --b;
  return utf8_encode(u.substr(a, b - a));
}

std::vector<std::string> str_split(const std::string& s, const std::string* sep, int64_t maxsplit,
                                   bool from_right) {
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) jfail("empty separator");
    if (!from_right) {
      size_t pos = 0;
      while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
        size_t f = s.find(*sep, pos);
        if (f == std::string::npos) break;
        out.push_back(s.substr(pos, f - pos));
        pos = f + sep->size();
      }
      out.push_back(s.substr(pos));
      return out;
    }
    size_t end = s.size();
    std::vector<std::string> rev;
    while (maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) {
      if (end < sep->size()) break;
      size_t f = s.rfind(*sep, end - sep->size());
      if (f == std::string::npos) break;
      rev.push_back(s.substr(f + sep->size(), end - f - sep->size()));
      end = f;
    }
    rev.push_back(s.substr(0, end));
    return {rev.rbegin(), rev.rend()};
  }
  std::u32string u = utf8_decode(s);
  if (!from_right) {
    size_t i = 0;
    while (true) {
      while (i < u.size() && is_py_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        out.push_back(utf8_encode(u.substr(i)));  // the rest keeps its trailing whitespace
        break;
      }
      size_t j = i;
      while (j < u.size() && !is_py_space(u[j])) ++j;
      out.push_back(utf8_encode(u.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  std::vector<std::string> rev;
  size_t i = u.size();
  while (true) {
    while (i > 0 && is_py_space(u[i - 1])) --i;
    if (i == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(rev.size()) >= maxsplit) {
      rev.push_back(utf8_encode(u.substr(0, i)));  // the rest keeps its leading whitespace
      break;
    }
    size_t j = i;
    while (j > 0 && !is_py_space(u[j - 1])) --j;
    rev.push_back(utf8_encode(u.substr(j, i - j)));
    i = j;
  }
  return {rev.rbegin(), rev.rend()};
}

std::vector<std::string> str_splitlines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  while (i < s.size()) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = ++i;
    } else {
      ++i;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

std::string str_replace(const std::string& s, const std::string& old, const std::string& rep,
                        int64_t count) {
  std::string out;
  if (old.empty()) {
    std::u32string u = utf8_decode(s);
    int64_t done = 0;
    for (size_t k = 0; k <= u.size(); ++k) {
      if (count < 0 || done < count) {
        out += rep;
        ++done;
      }
      if (k < u.size()) utf8_append(out, u[k]);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(old, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += rep;
    pos = f + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::string str_upper(const std::string& s) {
  if (all_ascii(s)) {
    std::string r = s;
    for (char& c : r)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return r;
  }
  std::u32string u = utf8_decode(s);
  std::u32string r;
  for (char32_t c : u) {
    if (c == 0xDF)
      r += U"SS";  // the common full case mapping utf8proc does not do
    else
      r.push_back(upper(c));
  }
  return utf8_encode(r);
}

std::string str_lower(const std::string& s) {
  if (all_ascii(s)) {
    std::string r = s;
    for (char& c : r)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return r;
  }
  std::u32string u = utf8_decode(s);
  for (char32_t& c : u) c = lower(c);
  return utf8_encode(u);
}

std::string str_capitalize(const std::string& s) {
  std::u32string u = utf8_decode(s);
  for (size_t k = 0; k < u.size(); ++k) u[k] = k == 0 ? title(u[k]) : lower(u[k]);
  return utf8_encode(u);
}

std::string str_title_method(const std::string& s) {
  std::u32string u = utf8_decode(s);
  bool prev_cased = false;
  for (char32_t& c : u) {
    bool cased = is_cased(c);
    if (cased) c = prev_cased ? lower(c) : title(c);
    prev_cased = cased;
  }
  return utf8_encode(u);
}

std::string str_title_filter(const std::string& s) {
  std::u32string u = utf8_decode(s);
  auto is_sep = [](char32_t c) {
    return is_py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
  };
  bool word_start = true;
  for (char32_t& c : u) {
    if (is_sep(c)) {
      word_start = true;
      continue;
    }
    c = word_start ? upper(c) : lower(c);
    word_start = false;
  }
  return utf8_encode(u);
}

int64_t str_find(const std::string& s, const std::string& sub, bool last) {
  size_t f = last ? s.rfind(sub) : s.find(sub);
  if (f == std::string::npos) return -1;
  return str_len(s.substr(0, f));
}

int64_t str_count(const std::string& s, const std::string& sub) {
  if (sub.empty()) return str_len(s) + 1;
  int64_t n = 0;
  for (size_t f = s.find(sub); f != std::string::npos; f = s.find(sub, f + sub.size())) ++n;
  return n;
}

std::string str_format(const std::string& s, const CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '{' && i + 1 < s.size() && s[i + 1] == '{') {
      out.push_back('{');
      ++i;
    } else if (c == '}' && i + 1 < s.size() && s[i + 1] == '}') {
      out.push_back('}');
      ++i;
    } else if (c == '{') {
      size_t e = s.find('}', i);
      if (e == std::string::npos) jfail("Single '{' encountered in format string");
      std::string field = s.substr(i + 1, e - i - 1);
      if (field.find_first_of(":!") != std::string::npos)
        jfail("format specs and conversions in str.format are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        if (auto_index >= a.pos.size()) jfail("Replacement index out of range for format");
        v = &a.pos[auto_index++];
      } else if (field.find_first_not_of("0123456789") == std::string::npos) {
        size_t k = std::stoul(field);
        if (k >= a.pos.size()) jfail("Replacement index out of range for format");
        v = &a.pos[k];
      } else {
        for (const auto& [kn, kv] : a.kw)
          if (kn == field) v = &kv;
        if (!v) jfail("format: no argument named '" + field + "'");
      }
      out += to_str(*v);
      i = e;
    } else if (c == '}') {
      jfail("Single '}' encountered in format string");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool str_is(const std::string& s, const std::string& what) {
  std::u32string u = utf8_decode(s);
  if (u.empty()) return false;
  if (what == "isupper" || what == "islower") {
    bool any = false;
    for (char32_t c : u) {
      if (what == "isupper" ? is_cased_lower(c) : is_cased_upper(c)) return false;
      any = any || is_cased(c);
    }
    return any;
  }
  for (char32_t c : u) {
    bool ok = what == "isspace"     ? is_py_space(c)
              : what == "isalpha"   ? is_alpha(c)
              : what == "isalnum"   ? (is_alpha(c) || is_numeric(c))
              : what == "isdecimal" ? is_decimal(c)
                                    : is_numeric(c);  // isdigit / isnumeric (approximately)
    if (!ok) return false;
  }
  return true;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

}  // namespace moe::jinja
