// Jinja lexer, see jinja_lexer.h.
#include "text/jinja_lexer.h"

#include <cctype>
#include <cstring>

#include "core/error.h"
#include "text/jinja_value.h"

namespace moe::jinja {

namespace {

struct Lexer {
  std::string src;
  const std::string& name;
  std::vector<size_t> line_starts;
  std::vector<Token> out;
  size_t pos = 0;

  Lexer(std::string s, const std::string& n) : src(std::move(s)), name(n) {
    line_starts.push_back(0);
    for (size_t i = 0; i < src.size(); ++i)
      if (src[i] == '\n') line_starts.push_back(i + 1);
  }

  // Tokens are located in increasing order: continue from the last answer.
  mutable size_t last_off = 0;
  mutable int last_line = 1, last_col = 1;

  std::pair<int, int> where(size_t off) const {
    if (off >= last_off && off - last_off < 4096) {
      for (size_t i = last_off; i < off && i < src.size(); ++i) {
        if (src[i] == '\n') {
          ++last_line;
          last_col = 1;
        } else if ((static_cast<unsigned char>(src[i]) & 0xC0) != 0x80) {
          ++last_col;
        }
      }
      last_off = off;
      return {last_line, last_col};
    }
    size_t lo = 0, hi = line_starts.size();
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      if (line_starts[mid] <= off)
        lo = mid;
      else
        hi = mid;
    }
    // Column counts code points, not bytes.
    int col = 1;
    for (size_t i = line_starts[lo]; i < off && i < src.size(); ++i)
      if ((static_cast<unsigned char>(src[i]) & 0xC0) != 0x80) ++col;
    last_off = off;
    last_line = static_cast<int>(lo) + 1;
    last_col = col;
    return {last_line, col};
  }

  [[noreturn]] void error(size_t off, const std::string& msg) const {
    auto [l, c] = where(off);
    fail("%s:%d:%d: %s", name.c_str(), l, c, msg.c_str());
  }

  void push(Tok kind, std::string text, size_t off) {
    auto [l, c] = where(off);
    out.push_back(Token{kind, std::move(text), l, c});
  }

  bool at(size_t p, const char* s) const { return src.compare(p, std::strlen(s), s) == 0; }

  // Next "{{", "{%" or "{#" at or after p; npos if none.
  size_t find_tag(size_t p) const {
    while (true) {
      p = src.find('{', p);
      if (p == std::string::npos || p + 1 >= src.size()) return std::string::npos;
      char c = src[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      ++p;
    }
  }

  // Whether the tag at p is "{% raw %}" (any -/+ modifiers); sets end to just past its "%}".
  bool is_raw_begin(size_t p, size_t& end, bool& strip_after) const {
    size_t q = p + 2;
    if (q < src.size() && (src[q] == '-' || src[q] == '+')) ++q;
    while (q < src.size() && std::isspace(static_cast<unsigned char>(src[q]))) ++q;
    if (!at(q, "raw")) return false;
    q += 3;
    if (q < src.size() && (std::isalnum(static_cast<unsigned char>(src[q])) || src[q] == '_'))
      return false;
    while (q < src.size() && std::isspace(static_cast<unsigned char>(src[q]))) ++q;
    strip_after = false;
    if (q < src.size() && src[q] == '-') {
      strip_after = true;
      ++q;
    } else if (q < src.size() && src[q] == '+') {
      ++q;
    }
    if (!at(q, "%}")) return false;
    end = q + 2;
    return true;
  }

  void run();
  void lex_tag_body(size_t start, bool is_var, bool& strip_after, bool& keep_newline);
};

void rstrip_ws(std::string& s) {
  size_t n = s.size();
  while (n > 0 && std::isspace(static_cast<unsigned char>(s[n - 1]))) --n;
  s.resize(n);
}

// lstrip_blocks: drop spaces/tabs between the last line start and the tag.
void lstrip_line(std::string& data, bool data_starts_line) {
  size_t nl = data.rfind('\n');
  size_t from = nl == std::string::npos ? 0 : nl + 1;
  if (nl == std::string::npos && !data_starts_line) return;
  for (size_t i = from; i < data.size(); ++i)
    if (data[i] != ' ' && data[i] != '\t') return;
  data.resize(from);
}

void Lexer::run() {
  bool strip_next = false;    // previous tag ended with "-"
  bool trim_newline = false;  // previous tag was a block/comment without "+"
  while (pos <= src.size()) {
    size_t data_start = pos;
    if (trim_newline && pos < src.size() && src[pos] == '\n') ++data_start;
    size_t tag = find_tag(data_start);
    size_t data_end = tag == std::string::npos ? src.size() : tag;
    std::string data = src.substr(data_start, data_end - data_start);
    bool starts_line = data_start == 0 || src[data_start - 1] == '\n';
    if (strip_next) {
      size_t k = 0;
      while (k < data.size() && std::isspace(static_cast<unsigned char>(data[k]))) ++k;
      data.erase(0, k);
      starts_line = false;
    }
    strip_next = trim_newline = false;
    if (tag == std::string::npos) {
      if (!data.empty()) push(Tok::text, std::move(data), data_start);
      break;
    }
    char kind = src[tag + 1];
    char mod = tag + 2 < src.size() ? src[tag + 2] : '\0';
    if (mod == '-')
      rstrip_ws(data);
    else if (kind != '{' && mod != '+')
      lstrip_line(data, starts_line);
    if (!data.empty()) push(Tok::text, std::move(data), data_start);

    if (kind == '#') {
      size_t end = src.find("#}", tag + 2);
      if (end == std::string::npos) error(tag, "unclosed comment: expected '#}'");
      strip_next = end > tag + 2 && src[end - 1] == '-' && end - 1 > tag + 2;
      trim_newline = !strip_next && !(end > tag + 2 && src[end - 1] == '+');
      pos = end + 2;
      continue;
    }
    size_t raw_end;
    bool raw_strip;
    if (kind == '%' && is_raw_begin(tag, raw_end, raw_strip)) {
      size_t q = raw_end;
      if (!raw_strip && q < src.size() && src[q] == '\n') ++q;
      // Find "{%[-+]? endraw [-+]?%}".
      size_t search = q;
      while (true) {
        size_t t = src.find("{%", search);
        if (t == std::string::npos) error(tag, "unclosed raw block: expected 'endraw'");
        size_t r = t + 2;
        char emod = r < src.size() ? src[r] : '\0';
        if (emod == '-' || emod == '+') ++r;
        while (r < src.size() && std::isspace(static_cast<unsigned char>(src[r]))) ++r;
        if (!at(r, "endraw")) {
          search = t + 2;
          continue;
        }
        r += 6;
        while (r < src.size() && std::isspace(static_cast<unsigned char>(src[r]))) ++r;
        bool after_strip = false;
        if (r < src.size() && (src[r] == '-' || src[r] == '+')) {
          after_strip = src[r] == '-';
          ++r;
        }
        if (!at(r, "%}")) error(t, "expected '%}' after 'endraw'");
        std::string body = src.substr(q, t - q);
        if (raw_strip) {
          size_t k = 0;
          while (k < body.size() && std::isspace(static_cast<unsigned char>(body[k]))) ++k;
          body.erase(0, k);
        }
        if (emod == '-')
          rstrip_ws(body);
        else if (emod != '+')
          lstrip_line(body, q == 0 || src[q - 1] == '\n');
        if (!body.empty()) push(Tok::text, std::move(body), q);
        pos = r + 2;
        strip_next = after_strip;
        trim_newline = !after_strip;
        break;
      }
      continue;
    }
    bool is_var = kind == '{';
    push(is_var ? Tok::var_begin : Tok::block_begin, is_var ? "{{" : "{%", tag);
    size_t body = tag + 2;
    if (mod == '-' || (mod == '+' && !is_var)) ++body;
    bool keep_newline = false;
    lex_tag_body(body, is_var, strip_next, keep_newline);
    trim_newline = !is_var && !strip_next && !keep_newline;
  }
  push(Tok::eof, "", src.size());
}

bool is_name_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// Python string-literal escapes as jinja2 decodes them (unicode-escape).
std::string unescape(const Lexer& lx, size_t off, const std::string& raw) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\' || i + 1 >= raw.size()) {
      out.push_back(c);
      continue;
    }
    char e = raw[++i];
    auto hex = [&](int n) -> char32_t {
      char32_t v = 0;
      for (int k = 1; k <= n; ++k) {
        if (i + k >= raw.size()) lx.error(off, "truncated \\x/\\u escape in string");
        char h = raw[i + k];
        if (!std::isxdigit(static_cast<unsigned char>(h)))
          lx.error(off, "bad \\x/\\u escape in string");
        v = v * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h))
                                               ? h - '0'
                                               : (std::tolower(h) - 'a' + 10));
      }
      i += static_cast<size_t>(n);
      return v;
    };
    switch (e) {
      case 'n':
        out.push_back('\n');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case '\n':
        break;  // line continuation
      case 'x':
        utf8_append(out, hex(2));
        break;
      case 'u':
        utf8_append(out, hex(4));
        break;
      case 'U': {
        char32_t v = hex(8);
        if (v > 0x10FFFF) lx.error(off, "\\U escape out of range");
        utf8_append(out, v);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          char32_t v = static_cast<char32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7';
               ++k)
            v = v * 8 + static_cast<char32_t>(raw[++i] - '0');
          utf8_append(out, v);
        } else {
          out.push_back('\\');
          out.push_back(e);
        }
    }
  }
  return out;
}

void Lexer::lex_tag_body(size_t p, bool is_var, bool& strip_after, bool& keep_newline) {
  static const char* ops2[] = {"//", "**", "==", "!=", ">=", "<="};
  int depth = 0;
  size_t open = p;
  while (true) {
    while (p < src.size() && std::isspace(static_cast<unsigned char>(src[p]))) ++p;
    if (p >= src.size())
      error(open - 2, is_var ? "unclosed '{{': expected '}}'" : "unclosed '{%': expected '%}'");
    if (depth == 0) {
      const char* close = is_var ? "}}" : "%}";
      if (src[p] == '-' && at(p + 1, close)) {
        push(is_var ? Tok::var_end : Tok::block_end, close, p);
        strip_after = true;
        pos = p + 3;
        return;
      }
      if (!is_var && src[p] == '+' && at(p + 1, close)) {
        push(Tok::block_end, close, p);
        keep_newline = true;
        pos = p + 3;
        return;
      }
      if (at(p, close)) {
        push(is_var ? Tok::var_end : Tok::block_end, close, p);
        pos = p + 2;
        return;
      }
      if (at(p, is_var ? "%}" : "}}"))
        error(p, std::string("unexpected '") + src.substr(p, 2) + "' inside '" +
                     (is_var ? "{{" : "{%") + "'");
    }
    char c = src[p];
    if (is_name_start(c)) {
      size_t q = p;
      while (q < src.size() && is_name_char(src[q])) ++q;
      push(Tok::name, src.substr(p, q - p), p);
      p = q;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t q = p;
      auto digits = [&]() {
        while (q < src.size() && (std::isdigit(static_cast<unsigned char>(src[q])) ||
                                  (src[q] == '_' && q + 1 < src.size() &&
                                   std::isdigit(static_cast<unsigned char>(src[q + 1])))))
          ++q;
      };
      digits();
      bool is_float = false;
      if (q + 1 < src.size() && src[q] == '.' &&
          std::isdigit(static_cast<unsigned char>(src[q + 1])) && !(p > 0 && src[p - 1] == '.')) {
        is_float = true;
        ++q;
        digits();
      }
      if (q < src.size() && (src[q] == 'e' || src[q] == 'E') && !(p > 0 && src[p - 1] == '.')) {
        size_t r = q + 1;
        if (r < src.size() && (src[r] == '+' || src[r] == '-')) ++r;
        if (r < src.size() && std::isdigit(static_cast<unsigned char>(src[r]))) {
          is_float = true;
          q = r;
          digits();
        }
      }
      std::string num;
      for (size_t k = p; k < q; ++k)
        if (src[k] != '_') num.push_back(src[k]);
      push(is_float ? Tok::floating : Tok::integer, num, p);
      p = q;
    } else if (c == '\'' || c == '"') {
      size_t q = p + 1;
      while (q < src.size() && src[q] != c) {
        if (src[q] == '\\') ++q;
        ++q;
      }
      if (q >= src.size()) error(p, "unterminated string literal");
      push(Tok::string, unescape(*this, p, src.substr(p + 1, q - p - 1)), p);
      p = q + 1;
    } else {
      std::string op;
      for (const char* o : ops2)
        if (at(p, o)) op = o;
      if (op.empty()) {
        if (std::strchr("+-*/%~()[]{}<>=.,:|", c) == nullptr || c == '\0')
          error(p, std::string("unexpected character '") + c + "'");
        op = std::string(1, c);
      }
      if (op == "(" || op == "[" || op == "{") ++depth;
      if (op == ")" || op == "]" || op == "}") {
        if (depth == 0) error(p, "unexpected '" + op + "'");
        --depth;
      }
      push(Tok::op, op, p);
      p += op.size();
    }
  }
}

}  // namespace

std::vector<Token> lex(const std::string& source, const std::string& name) {
  std::string s;
  s.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      s.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      s.push_back(source[i]);
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();
  Lexer lx(std::move(s), name);
  lx.run();
  return std::move(lx.out);
}

}  // namespace moe::jinja
