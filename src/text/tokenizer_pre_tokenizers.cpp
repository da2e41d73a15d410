// Pre-tokenizers of tokenizer.json: split each section into the words BPE sees, exactly as the
// Rust library's NormalizedString::split with its five delimiter behaviours.
#include <algorithm>

#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {

namespace tok {

namespace {

const TokRegex& gpt2_regex() {
  static const std::shared_ptr<const TokRegex> re = regex_compile(
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "ByteLevel pre-tokenizer");
  return *re;
}

// Rust's Pattern for Fn(char) -> bool: every matching character is its own match.
template <class Pred>
void char_spans(std::string_view s, Pred pred, std::vector<Span>* out) {
  out->clear();
  if (s.empty()) {
    out->push_back({0, 0, false});
    return;
  }
  size_t last = 0, i = 0;
  while (i < s.size()) {
    size_t b = i;
    uint32_t cp = utf8_next(s, &i);
    if (pred(cp)) {
      if (last < b) out->push_back({last, b, false});
      out->push_back({b, i, true});
      last = i;
    }
  }
  if (last < s.size()) out->push_back({last, s.size(), false});
}

// Applies fn(piece, &out) to every piece that is not an added token.
template <class F>
void for_each_split(std::vector<Piece>* pieces, F fn) {
  std::vector<Piece> out;
  out.reserve(pieces->size() * 2);
  for (Piece& p : *pieces) {
    if (p.added_id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    fn(p, &out);
  }
  pieces->swap(out);
}

void byte_map(Piece* p) {
  std::string out;
  out.reserve(p->text.size() * 2);
  int32_t lead = 0;
  for (size_t i = 0; i < p->text.size(); ++i) {
    const std::string& c = byte_char(static_cast<uint8_t>(p->text[i]));
    out += c;
    if (static_cast<int64_t>(i) < p->lead) lead += static_cast<int32_t>(c.size());
  }
  p->text = std::move(out);
  p->lead = lead;
}

void prepend(Piece* p, const std::string& s) {
  if (p->text.empty()) return;
  p->text.insert(0, s);
  if (p->lead > 0) p->lead += static_cast<int32_t>(s.size());
}

void metaspace(const TokPreTokenizer& pt, Piece& p, std::vector<Piece>* out) {
  const std::string& rep = pt.replacement;
  if (p.text.find(' ') != std::string::npos) {
    std::string t;
    t.reserve(p.text.size() + 16);
    int32_t lead = 0;
    for (size_t i = 0; i < p.text.size(); ++i) {
      size_t before = t.size();
      if (p.text[i] == ' ')
        t += rep;
      else
        t += p.text[i];
      if (static_cast<int64_t>(i) < p.lead) lead += static_cast<int32_t>(t.size() - before);
    }
    p.text = std::move(t);
    p.lead = lead;
  }
  bool starts = p.text.compare(0, rep.size(), rep) == 0;
  if (pt.prepend_scheme == TokPrependScheme::Always && !starts) prepend(&p, rep);
  if (pt.prepend_scheme == TokPrependScheme::First && !starts && p.lead > 0) prepend(&p, rep);
  if (!pt.split) {
    out->push_back(std::move(p));
    return;
  }
  std::vector<Span> spans;
  size_t i = 0, last = 0;
  const std::string& s = p.text;
  if (s.empty()) spans.push_back({0, 0, false});
  while (i < s.size()) {
    if (s.compare(i, rep.size(), rep) == 0) {
      if (last < i) spans.push_back({last, i, false});
      spans.push_back({i, i + rep.size(), true});
      i += rep.size();
      last = i;
    } else {
      i += utf8_len(static_cast<uint8_t>(s[i]));
    }
  }
  if (last < s.size()) spans.push_back({last, s.size(), false});
  split_spans(p, spans, TokSplitBehavior::MergedWithNext, out);
}

// Rust's Whitespace pre-tokenizer: the regex \w+|[^\w\s]+ inverted and removed, i.e. runs of word
// characters and runs of other non-space characters, whitespace dropped.
void whitespace_words(const Piece& p, std::vector<Piece>* out) {
  const std::string& s = p.text;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    uint32_t cp = utf8_next(s, &j);
    if (is_whitespace(cp)) {
      i = j;
      continue;
    }
    bool word = is_word_char(cp);
    size_t end = j;
    while (end < s.size()) {
      size_t k = end;
      uint32_t c2 = utf8_next(s, &k);
      if (is_whitespace(c2) || is_word_char(c2) != word) break;
      end = k;
    }
    Piece q;
    q.text = s.substr(i, end - i);
    q.lead = std::max<int32_t>(0, std::min<int32_t>(p.lead - static_cast<int32_t>(i),
                                                    static_cast<int32_t>(q.text.size())));
    out->push_back(std::move(q));
    i = end;
  }
}

}  // namespace

void split_spans(const Piece& p, const std::vector<Span>& spans, TokSplitBehavior behavior,
                 std::vector<Piece>* out) {
  // (start, end, remove)
  struct Cut {
    size_t start, end;
    bool remove;
  };
  std::vector<Cut> cuts;
  cuts.reserve(spans.size());
  switch (behavior) {
    case TokSplitBehavior::Isolated:
      for (const Span& s : spans) cuts.push_back({s.start, s.end, false});
      break;
    case TokSplitBehavior::Removed:
      for (const Span& s : spans) cuts.push_back({s.start, s.end, s.match});
      break;
    case TokSplitBehavior::Contiguous: {
      bool prev = false;
      for (const Span& s : spans) {
        if (s.match == prev && !cuts.empty())
          cuts.back().end = s.end;
        else
          cuts.push_back({s.start, s.end, false});
        prev = s.match;
      }
      break;
    }
    case TokSplitBehavior::MergedWithPrevious: {
      bool prev = false;
      for (const Span& s : spans) {
        if (s.match && !prev && !cuts.empty())
          cuts.back().end = s.end;
        else
          cuts.push_back({s.start, s.end, false});
        prev = s.match;
      }
      break;
    }
    case TokSplitBehavior::MergedWithNext: {
      bool prev = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.match && !prev && !cuts.empty())
          cuts.back().start = s.start;
        else
          cuts.push_back({s.start, s.end, false});
        prev = s.match;
      }
      std::reverse(cuts.begin(), cuts.end());
      break;
    }
  }
  for (const Cut& c : cuts) {
    if (c.remove || c.end <= c.start) continue;
    Piece q;
    q.text = p.text.substr(c.start, c.end - c.start);
    q.lead = std::max<int32_t>(0, std::min<int32_t>(p.lead - static_cast<int32_t>(c.start),
                                                    static_cast<int32_t>(q.text.size())));
    out->push_back(std::move(q));
  }
}

void pre_tokenize(const TokPreTokenizer& pt, std::vector<Piece>* pieces) {
  std::vector<Span> spans;
  switch (pt.kind) {
    case TokPreKind::None:
      return;
    case TokPreKind::Sequence:
      for (const TokPreTokenizer& c : pt.children) pre_tokenize(c, pieces);
      return;
    case TokPreKind::ByteLevel:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) {
        if (pt.add_prefix_space && p.text.compare(0, 1, " ") != 0) prepend(&p, " ");
        if (!pt.use_regex) {
          if (!p.text.empty()) out->push_back(std::move(p));
          return;
        }
        regex_find_matches(gpt2_regex(), p.text, &spans);
        split_spans(p, spans, TokSplitBehavior::Isolated, out);
      });
      for (Piece& p : *pieces)
        if (p.added_id < 0) byte_map(&p);
      return;
    case TokPreKind::Split:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) {
        regex_find_matches(*pt.pattern.re, p.text, &spans);
        if (pt.invert)
          for (Span& s : spans) s.match = !s.match;
        split_spans(p, spans, pt.behavior, out);
      });
      return;
    case TokPreKind::Metaspace:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) { metaspace(pt, p, out); });
      return;
    case TokPreKind::Digits:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) {
        char_spans(p.text, is_numeric, &spans);
        split_spans(
            p, spans,
            pt.individual_digits ? TokSplitBehavior::Isolated : TokSplitBehavior::Contiguous, out);
      });
      return;
    case TokPreKind::Whitespace:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) { whitespace_words(p, out); });
      return;
    case TokPreKind::WhitespaceSplit:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) {
        char_spans(p.text, is_whitespace, &spans);
        split_spans(p, spans, TokSplitBehavior::Removed, out);
      });
      return;
    case TokPreKind::Punctuation:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) {
        char_spans(p.text, is_punctuation, &spans);
        split_spans(p, spans, pt.behavior, out);
      });
      return;
    case TokPreKind::Bert:
      for_each_split(pieces, [&](Piece& p, std::vector<Piece>* out) {
        char_spans(p.text, is_whitespace, &spans);
        std::vector<Piece> words;
        split_spans(p, spans, TokSplitBehavior::Removed, &words);
        for (Piece& w : words) {
          char_spans(w.text, is_punctuation, &spans);
          split_spans(w, spans, TokSplitBehavior::Isolated, out);
        }
      });
      return;
  }
}

}  // namespace tok

}  // namespace moe
