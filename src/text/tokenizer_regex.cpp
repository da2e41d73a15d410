// Regexes of tokenizer.json (Split pre-tokenizer, Replace normalizer/decoder). The Rust library
// compiles them with Oniguruma (Ruby syntax, UTF-8); here they are translated to PCRE2 in UTF + UCP
// mode (JIT-compiled where possible). The translation keeps Oniguruma's meaning where PCRE2
// differs:
//   \s  Oniguruma's Unicode whitespace includes U+0085 (NEL); PCRE2's does not -> [\s\x{85}]
//   \w  Oniguruma: Letter | Mark | Decimal_Number | Connector_Punctuation
//   \h  Oniguruma: a hex digit (PCRE2: horizontal space)
//   \uHHHH -> \x{HHHH};  {,n} -> {0,n};  (?m) (Ruby: dot matches newline) -> (?s)
//   ^ and $ are line anchors in Ruby syntax -> PCRE2_MULTILINE.
// Matches are iterated like the onig crate's find_iter: an empty match right after the previous
// match is skipped by advancing one character.
// Every match runs under explicit PCRE2 bounds (match steps, backtracking depth, heap), so a
// catastrophic-backtracking pattern from a stranger's tokenizer.json fails with one line naming the
// pattern instead of hanging.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstring>

#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {

struct TokRegex {
  pcre2_code* code = nullptr;
  bool jit = false;
  bool literal = false;
  std::string text;     // literal text
  std::string source;   // the pattern as written in tokenizer.json, for errors
  std::string where;    // file and field of the pattern, for errors
  ~TokRegex() {
    if (code) pcre2_code_free(code);
  }
};

namespace tok {

namespace {

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Bounds of one pcre2_match call. Tokenizer patterns of real models match each piece in a few
// steps per byte; the step limit is reached only by backtracking that grows faster than the input,
// and takes well under a second (JIT or interpreter).
constexpr uint32_t kMatchLimit = 10'000'000;  // PCRE2 match steps
constexpr uint32_t kDepthLimit = 100'000;     // backtracking depth (interpreter)
constexpr uint32_t kHeapLimitKiB = 256 * 1024;  // interpreter backtracking memory: 256 MiB

// Per-thread PCRE2 match context with the bounds above and a JIT stack large enough for long runs
// of whitespace.
struct MatchEnv {
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchEnv() {
    mctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    if (!mctx) throw std::bad_alloc();
    pcre2_set_match_limit(mctx, kMatchLimit);
    pcre2_set_depth_limit(mctx, kDepthLimit);
    pcre2_set_heap_limit(mctx, kHeapLimitKiB);
    if (stack) pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~MatchEnv() {
    if (stack) pcre2_jit_stack_free(stack);
    if (mctx) pcre2_match_context_free(mctx);
  }
};

MatchEnv& match_env() {
  thread_local MatchEnv env;
  return env;
}

struct MatchData {
  pcre2_match_data* md;
  explicit MatchData(const pcre2_code* code)
      : md(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (!md) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// The pattern with control characters escaped, so an error stays on one line.
std::string printable_pattern(const std::string& p) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : p) {
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Finds the next match at or after `start`; returns false if none.
bool search(const TokRegex& re, std::string_view s, size_t start, MatchData* md, size_t* ms,
            size_t* me) {
  if (re.literal) {
    size_t p = s.find(re.text, start);
    if (p == std::string_view::npos) return false;
    *ms = p;
    *me = p + re.text.size();
    return true;
  }
  MatchEnv& env = match_env();
  int rc = pcre2_match(re.code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start,
                       PCRE2_NO_UTF_CHECK, md->md, env.mctx);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    // Deep recursion the JIT stack cannot hold: the interpreter keeps its backtracking state on
    // the heap, under the same step, depth and heap bounds.
    rc = pcre2_match(re.code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start,
                     PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md->md, env.mctx);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
      rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
    fail("%s: regex '%s' is too costly to match (%s, at byte %zu of a %zu-byte piece)",
         re.where.c_str(), printable_pattern(re.source).c_str(), pcre2_message(rc).c_str(), start,
         s.size());
  if (rc < 0)
    fail("%s: regex '%s': matching failed: %s", re.where.c_str(),
         printable_pattern(re.source).c_str(), pcre2_message(rc).c_str());
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md->md);
  *ms = ov[0];
  *me = ov[1];
  if (*me < *ms) *me = *ms;  // \K tricks; keep spans sane
  return true;
}

}  // namespace

std::string regex_translate(const std::string& p) {
  static const char* kWord = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  size_t class_start = 0;  // index just after '[' or '[^'
  size_t i = 0, n = p.size();
  while (i < n) {
    char c = p[i];
    if (c == '\\' && i + 1 < n) {
      char e = p[i + 1];
      switch (e) {
        case 's':
          out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
          i += 2;
          continue;
        case 'S':
          out += in_class ? "\\S" : "[^\\s\\x{85}]";
          i += 2;
          continue;
        case 'w':
          out += in_class ? std::string(kWord) : "[" + std::string(kWord) + "]";
          i += 2;
          continue;
        case 'W':
          out += in_class ? "\\W" : "[^" + std::string(kWord) + "]";
          i += 2;
          continue;
        case 'h':
          out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
          i += 2;
          continue;
        case 'H':
          out += in_class ? "\\H" : "[^0-9a-fA-F]";
          i += 2;
          continue;
        case 'u':
          if (i + 6 <= n && is_hex(p[i + 2]) && is_hex(p[i + 3]) && is_hex(p[i + 4]) &&
              is_hex(p[i + 5])) {
            out += "\\x{" + p.substr(i + 2, 4) + "}";
            i += 6;
            continue;
          }
          break;
        case 'p':
        case 'P':
          if (i + 2 < n && p[i + 2] == '{') {
            size_t close = p.find('}', i + 3);
            if (close != std::string::npos) {
              out.append(p, i, close + 1 - i);
              i = close + 1;
              continue;
            }
          }
          break;
        default:
          break;
      }
      out += c;
      out += e;
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < n && p[i + 1] == ':') {  // POSIX class [:alpha:]
        size_t close = p.find(":]", i + 2);
        if (close != std::string::npos) {
          out.append(p, i, close + 2 - i);
          i = close + 2;
          continue;
        }
      }
      if (c == ']' && i != class_start) in_class = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < n && p[i] == '^') {
        out += '^';
        ++i;
      }
      class_start = i;
      continue;
    }
    if (c == '{' && i + 1 < n && p[i + 1] == ',') {  // {,n} -> {0,n}
      size_t j = i + 2;
      while (j < n && p[j] >= '0' && p[j] <= '9') ++j;
      if (j > i + 2 && j < n && p[j] == '}') {
        out += "{0";
        ++i;
        continue;
      }
    }
    if (c == '(' && i + 2 < n && p[i + 1] == '?') {
      // Inline options (?imx-imx) / (?imx-imx:...): Ruby's 'm' is PCRE2's 's'.
      size_t j = i + 2;
      std::string opts;
      while (j < n && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) {
        opts += p[j] == 'm' ? 's' : p[j];
        ++j;
      }
      if (!opts.empty() && j < n && (p[j] == ')' || p[j] == ':')) {
        out += "(?" + opts;
        i = j;
        continue;
      }
    }
    out += c;
    ++i;
  }
  return out;
}

std::shared_ptr<const TokRegex> regex_compile(const std::string& onig, const std::string& where) {
  auto re = std::make_shared<TokRegex>();
  re->source = onig;
  re->where = where;
  std::string pat = regex_translate(onig);
  pcre2_compile_context* cctx = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
  int err = 0;
  PCRE2_SIZE off = 0;
  re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                           PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &off, cctx);
  pcre2_compile_context_free(cctx);
  if (!re->code)
    fail("%s: invalid regex '%s': %s at offset %zu", where.c_str(), printable_pattern(onig).c_str(),
         pcre2_message(err).c_str(), static_cast<size_t>(off));
  re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

std::shared_ptr<const TokRegex> regex_literal(const std::string& text, const std::string& where) {
  if (text.empty()) return regex_compile("", where);  // Onig's empty regex: empty matches
  auto re = std::make_shared<TokRegex>();
  re->literal = true;
  re->text = text;
  re->source = text;
  re->where = where;
  return re;
}

void regex_find_matches(const TokRegex& re, std::string_view s, std::vector<Span>* out) {
  out->clear();
  if (s.empty()) {
    out->push_back({0, 0, false});
    return;
  }
  std::unique_ptr<MatchData> md;
  if (!re.literal) md = std::make_unique<MatchData>(re.code);
  size_t prev = 0, last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= s.size()) {
    size_t ms, me;
    if (!search(re, s, last_end, md.get(), &ms, &me)) break;
    if (ms == me && have_last && last_match_end == me) {
      // onig's FindMatches: no empty match right after the previous match; step one char.
      if (last_end >= s.size()) break;
      last_end += utf8_len(static_cast<uint8_t>(s[last_end]));
      continue;
    }
    last_end = me;
    last_match_end = me;
    have_last = true;
    if (prev != ms) out->push_back({prev, ms, false});
    out->push_back({ms, me, true});
    prev = me;
  }
  if (prev != s.size()) out->push_back({prev, s.size(), false});
}

}  // namespace tok

}  // namespace moe
