// Encoding and decoding with a loaded tokenizer: added-token extraction (Rust's AddedVocabulary),
// the normalize -> pre-tokenize -> BPE -> post-process pipeline, decode and the decode stream.
#include "text/tokenizer.h"

#include <algorithm>

#include "core/error.h"

namespace moe {

namespace tok {

void matcher_build(TokAddedMatcher* m, const std::vector<TokAddedToken>& added, bool normalized) {
  m->nodes.assign(1, TokAddedMatcher::Node{});
  std::fill(std::begin(m->first_byte), std::end(m->first_byte), false);
  for (size_t i = 0; i < added.size(); ++i) {
    const TokAddedToken& a = added[i];
    if (a.normalized != normalized || a.match.empty()) continue;
    int32_t node = 0;
    for (unsigned char c : a.match) {
      auto& next = m->nodes[node].next;
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, int32_t{-1}));
      if (it != next.end() && it->first == c) {
        node = it->second;
      } else {
        int32_t created = static_cast<int32_t>(m->nodes.size());
        next.insert(it, {c, created});
        m->nodes.emplace_back();
        node = created;
      }
    }
    m->nodes[node].token = static_cast<int32_t>(i);
    m->first_byte[static_cast<uint8_t>(a.match[0])] = true;
  }
}

}  // namespace tok

namespace {

using tok::Piece;

// Longest added token starting at `pos`; returns its index (or -1) and its end in *end.
int32_t longest_at(const TokAddedMatcher& m, std::string_view s, size_t pos, size_t* end) {
  int32_t node = 0, best = -1;
  for (size_t i = pos; i < s.size(); ++i) {
    const auto& next = m.nodes[node].next;
    uint8_t c = static_cast<uint8_t>(s[i]);
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, int32_t{-1}));
    if (it == next.end() || it->first != c) break;
    node = it->second;
    if (m.nodes[node].token >= 0) {
      best = m.nodes[node].token;
      *end = i + 1;
    }
  }
  return best;
}

uint32_t last_char(std::string_view s) {
  size_t j = s.size() - 1;
  while (j > 0 && (static_cast<uint8_t>(s[j]) & 0xC0) == 0x80) --j;
  return tok::utf8_next(s, &j);
}

// Start of the run of whitespace that ends s (Rust: the match of \s*$).
size_t trailing_space_start(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t j = e - 1;
    while (j > 0 && (static_cast<uint8_t>(s[j]) & 0xC0) == 0x80) --j;
    size_t k = j;
    if (!tok::is_whitespace(tok::utf8_next(s, &k))) break;
    e = j;
  }
  return e;
}

// Length of the run of whitespace that starts s (Rust: the match of ^\s*).
size_t leading_space_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!tok::is_whitespace(tok::utf8_next(s, &j))) break;
    i = j;
  }
  return i;
}

int32_t sub_lead(int32_t lead, size_t start, size_t len) {
  return std::max<int32_t>(
      0, std::min<int32_t>(lead - static_cast<int32_t>(start), static_cast<int32_t>(len)));
}

// Rust's AddedVocabulary::find_matches + split_with_indices over one piece of text.
void split_added(const Tokenizer& t, const TokAddedMatcher& m, Piece&& in,
                 std::vector<Piece>* out) {
  const std::string& s = in.text;
  if (s.empty()) return;
  if (m.empty()) {
    out->push_back(std::move(in));
    return;
  }
  size_t n = s.size(), start_offset = 0, pos = 0;
  auto emit = [&](size_t b, size_t e, int32_t id) {
    if (e <= b) return;
    Piece p;
    p.text = s.substr(b, e - b);
    p.lead = sub_lead(in.lead, b, e - b);
    p.added_id = id;
    out->push_back(std::move(p));
  };
  while (pos < n) {
    if (!m.first_byte[static_cast<uint8_t>(s[pos])]) {
      ++pos;
      continue;
    }
    size_t stop = 0;
    int32_t idx = longest_at(m, s, pos, &stop);
    if (idx < 0) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t match_end = stop;
    const TokAddedToken& a = t.added[idx];
    if (a.single_word) {
      bool start_space =
          start == 0 || !tok::is_word_char(last_char(std::string_view(s).substr(0, start)));
      bool stop_space = stop == n;
      if (!stop_space) {
        size_t k = stop;
        stop_space = !tok::is_word_char(tok::utf8_next(s, &k));
      }
      if (!start_space || !stop_space) {
        pos = match_end;  // the matcher moves on past the discarded match
        continue;
      }
    }
    if (a.lstrip)
      start = std::max(trailing_space_start(std::string_view(s).substr(0, start)), start_offset);
    if (a.rstrip) stop += leading_space_len(std::string_view(s).substr(stop));
    if (start_offset < start) emit(start_offset, start, -1);
    emit(start, stop, a.id);
    start_offset = stop;
    pos = match_end;
  }
  if (start_offset < n) emit(start_offset, n, -1);
}

std::string id_to_token(const Tokenizer& t, int32_t id, bool* found) {
  auto it = t.added_by_id.find(id);
  if (it != t.added_by_id.end()) {
    *found = true;
    return t.added[it->second].match;
  }
  const TokBpe& m = t.model;
  *found = id >= 0 && static_cast<size_t>(id) < m.vocab_r.size() && m.has_id[id];
  return *found ? m.vocab_r[id] : std::string();
}

}  // namespace

std::vector<int32_t> tokenizer_encode(const Tokenizer& t, std::string_view text, bool add_special) {
  std::vector<int32_t> ids;
  Piece all;
  all.text = tok::utf8_lossy(text);
  all.lead =
      all.text.empty() ? 0 : static_cast<int32_t>(tok::utf8_len(static_cast<uint8_t>(all.text[0])));
  std::vector<Piece> sections;
  split_added(t, t.raw_matcher, std::move(all), &sections);
  std::vector<Piece> pieces;
  pieces.reserve(sections.size());
  for (Piece& sec : sections) {
    if (sec.added_id >= 0) {
      pieces.push_back(std::move(sec));
      continue;
    }
    tok::normalize(t.normalizer, &sec);
    split_added(t, t.norm_matcher, std::move(sec), &pieces);
  }
  tok::pre_tokenize(t.pre_tokenizer, &pieces);
  ids.reserve(pieces.size() * 2);
  for (const Piece& p : pieces) {
    if (p.added_id >= 0)
      ids.push_back(p.added_id);
    else
      tok::bpe_encode_word(t.model, t.cache.get(), p.text, &ids);
  }
  tok::post_process(t.post_processor, &ids, add_special);
  return ids;
}

std::string tokenizer_decode(const Tokenizer& t, const std::vector<int32_t>& ids,
                             bool skip_special) {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    bool found = false;
    std::string tokstr = id_to_token(t, id, &found);
    if (!found) continue;  // unknown ids are skipped, as in Rust
    if (skip_special && t.special_set.count(tokstr)) continue;
    tokens.push_back(std::move(tokstr));
  }
  std::string out;
  if (t.decoder.kind == TokDecKind::None) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  tok::decode_chain(t.decoder, &tokens);
  for (const std::string& s : tokens) out += s;
  return out;
}

int32_t tokenizer_token_id(const Tokenizer& t, std::string_view token) {
  auto it = t.added_by_content.find(std::string(token));
  if (it != t.added_by_content.end()) return it->second;
  return t.model.vocab.get(token);
}

int32_t tokenizer_vocab_size(const Tokenizer& t) {
  int32_t n = static_cast<int32_t>(t.model.vocab_r.size());
  for (const auto& kv : t.added_by_id) n = std::max(n, kv.first + 1);
  return n;
}

static bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

// Rust's step_decode_stream.
std::string decode_stream_step(const Tokenizer& t, DecodeStream* st, int32_t id) {
  if (st->prefix.empty() && !st->ids.empty()) {
    std::string new_prefix = tokenizer_decode(t, st->ids, st->skip_special);
    if (!ends_with_replacement(new_prefix)) {
      st->prefix = std::move(new_prefix);
      st->prefix_index = st->ids.size();
    }
  }
  st->ids.push_back(id);
  std::string s = tokenizer_decode(t, st->ids, st->skip_special);
  if (s.size() > st->prefix.size() && !ends_with_replacement(s)) {
    if (s.compare(0, st->prefix.size(), st->prefix) != 0)
      fail(
          "%s: decode stream: token %d changed the text already returned ('%s' is not a prefix "
          "of '%s')",
          t.path.c_str(), id, st->prefix.c_str(), s.c_str());
    std::string new_text = s.substr(st->prefix.size());
    size_t new_prefix_index = st->ids.size() - st->prefix_index;
    st->ids.erase(st->ids.begin(), st->ids.begin() + static_cast<std::ptrdiff_t>(st->prefix_index));
    st->prefix = tokenizer_decode(t, st->ids, st->skip_special);
    st->prefix_index = new_prefix_index;
    return new_text;
  }
  return std::string();
}

}  // namespace moe
