// Decoders of tokenizer.json: Rust's Decoder::decode_chain for each kind (the final text is the
// concatenation of the chain's output).
#include <algorithm>

#include "text/tokenizer.h"

namespace moe {

namespace tok {

namespace {

void byte_level(std::vector<std::string>* tokens) {
  std::string bytes;
  for (const std::string& t : *tokens) {
    size_t start = bytes.size();
    bool ok = true;
    size_t i = 0;
    while (i < t.size()) {
      int b = byte_of_char(utf8_next(t, &i));
      if (b < 0) {
        ok = false;
        break;
      }
      bytes.push_back(static_cast<char>(b));
    }
    if (!ok) {  // a char outside the byte alphabet: the token's own UTF-8 bytes
      bytes.resize(start);
      bytes += t;
    }
  }
  tokens->assign(1, utf8_lossy(bytes));
}

void metaspace(const TokDecoder& d, std::vector<std::string>* tokens) {
  const std::string& rep = d.str;
  for (size_t i = 0; i < tokens->size(); ++i) {
    std::string& t = (*tokens)[i];
    if (rep.empty() || t.find(rep) == std::string::npos) continue;
    std::string out;
    size_t k = 0;
    while (k < t.size()) {
      if (t.compare(k, rep.size(), rep) == 0) {
        if (!(i == 0 && d.prepend_scheme != TokPrependScheme::Never)) out += ' ';
        k += rep.size();
      } else {
        out += t[k++];
      }
    }
    t = std::move(out);
  }
}

int hex_val(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void byte_fallback(std::vector<std::string>* tokens) {
  std::vector<std::string> out;
  out.reserve(tokens->size());
  std::string pending;
  auto flush = [&]() {
    if (pending.empty()) return;
    if (utf8_valid(pending)) {
      out.push_back(pending);
    } else {
      for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
    }
    pending.clear();
  };
  for (std::string& t : *tokens) {
    int byte = -1;
    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
      int hi = hex_val(t[3]), lo = hex_val(t[4]);
      if (hi >= 0 && lo >= 0) byte = hi * 16 + lo;
    }
    if (byte >= 0) {
      pending.push_back(static_cast<char>(byte));
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  tokens->swap(out);
}

void strip(const TokDecoder& d, std::vector<std::string>* tokens) {
  uint32_t content = 0;
  size_t ci = 0;
  if (!d.str.empty()) content = utf8_next(d.str, &ci);
  for (std::string& t : *tokens) {
    std::vector<size_t> starts;  // byte offset of each char, plus the end
    size_t i = 0;
    std::vector<uint32_t> cps;
    while (i < t.size()) {
      starts.push_back(i);
      cps.push_back(utf8_next(t, &i));
    }
    starts.push_back(t.size());
    size_t n = cps.size();
    size_t start_cut = 0;
    for (size_t k = 0; k < std::min(d.start, n); ++k) {
      if (cps[k] != content) break;
      start_cut = k + 1;
    }
    size_t stop_cut = n;
    for (size_t k = 0; k < std::min(d.stop, n); ++k) {
      size_t index = n - k - 1;
      if (cps[index] != content) break;
      stop_cut = index;
    }
    if (stop_cut < start_cut) stop_cut = start_cut;  // Rust would panic here
    t = t.substr(starts[start_cut], starts[stop_cut] - starts[start_cut]);
  }
}

void replace(const TokDecoder& d, std::vector<std::string>* tokens) {
  std::vector<Span> spans;
  for (std::string& t : *tokens) {
    regex_find_matches(*d.pattern.re, t, &spans);
    std::string out;
    for (const Span& s : spans) {
      if (s.match)
        out += d.str;
      else
        out.append(t, s.start, s.end - s.start);
    }
    t = std::move(out);
  }
}

void bpe_suffix(const TokDecoder& d, std::vector<std::string>* tokens) {
  if (d.str.empty()) return;
  for (size_t i = 0; i < tokens->size(); ++i) {
    std::string& t = (*tokens)[i];
    std::string with = i + 1 == tokens->size() ? "" : " ";
    std::string out;
    size_t k = 0;
    while (true) {
      size_t p = t.find(d.str, k);
      if (p == std::string::npos) break;
      out.append(t, k, p - k);
      out += with;
      k = p + d.str.size();
    }
    out.append(t, k, std::string::npos);
    t = std::move(out);
  }
}

}  // namespace

void decode_chain(const TokDecoder& d, std::vector<std::string>* tokens) {
  switch (d.kind) {
    case TokDecKind::None:
      return;
    case TokDecKind::Sequence:
      for (const TokDecoder& c : d.children) decode_chain(c, tokens);
      return;
    case TokDecKind::ByteLevel:
      byte_level(tokens);
      return;
    case TokDecKind::Metaspace:
      metaspace(d, tokens);
      return;
    case TokDecKind::ByteFallback:
      byte_fallback(tokens);
      return;
    case TokDecKind::Fuse: {
      std::string all;
      for (const std::string& t : *tokens) all += t;
      tokens->assign(1, std::move(all));
      return;
    }
    case TokDecKind::Strip:
      strip(d, tokens);
      return;
    case TokDecKind::Replace:
      replace(d, tokens);
      return;
    case TokDecKind::BPEDecoder:
      bpe_suffix(d, tokens);
      return;
  }
}

}  // namespace tok

}  // namespace moe
