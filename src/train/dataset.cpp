#include "train/dataset.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "text/bpe_train.h"
#include "text/tokenizer.h"
#include "train/corpus.h"

namespace moe {

namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'O', 'K', 'S', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeader = 32;

struct Stream {
  std::vector<int32_t> ids;
  std::vector<uint8_t> genre, pos;
};

void write_shard(const std::string& path, const Stream& s, int vocab, bool labeled) {
  const uint32_t tb = vocab <= 65536 ? 2 : 4;
  std::vector<uint8_t> header(kHeader, 0), toks(s.ids.size() * tb);
  std::memcpy(header.data(), kMagic, 8);
  const uint64_t n = s.ids.size();
  const uint32_t lab = labeled ? 1 : 0;
  std::memcpy(header.data() + 8, &kVersion, 4);
  std::memcpy(header.data() + 12, &tb, 4);
  std::memcpy(header.data() + 16, &n, 8);
  std::memcpy(header.data() + 24, &lab, 4);
  for (size_t i = 0; i < s.ids.size(); ++i) {
    if (tb == 2) {
      const uint16_t v = static_cast<uint16_t>(s.ids[i]);
      std::memcpy(toks.data() + 2 * i, &v, 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(s.ids[i]);
      std::memcpy(toks.data() + 4 * i, &v, 4);
    }
  }
  std::vector<WriteChunk> chunks = {{header.data(), header.size()}, {toks.data(), toks.size()}};
  if (labeled) {
    chunks.push_back({s.genre.data(), s.genre.size()});
    chunks.push_back({s.pos.data(), s.pos.size()});
  }
  write_file_atomic_chunks(path, chunks);
}

void open_shard(Shard* sh, const std::string& path, int vocab) {
  sh->file = std::make_unique<MappedFile>();
  mapped_file_open(sh->file.get(), path);
  const MappedFile& f = *sh->file;
  if (f.size < kHeader || std::memcmp(f.data, kMagic, 8) != 0)
    fail("%s: not a moe.cpp token shard (bad magic)", path.c_str());
  uint32_t version, tb, lab;
  uint64_t n;
  std::memcpy(&version, f.data + 8, 4);
  std::memcpy(&tb, f.data + 12, 4);
  std::memcpy(&n, f.data + 16, 8);
  std::memcpy(&lab, f.data + 24, 4);
  if (version != kVersion) fail("%s: shard version %u is not supported (expected %u)", path.c_str(), version, kVersion);
  if (tb != 2 && tb != 4) fail("%s: field 'bytes per token': %u (expected 2 or 4)", path.c_str(), tb);
  if (lab > 1) fail("%s: field 'labeled': %u (expected 0 or 1)", path.c_str(), lab);
  const uint64_t per = tb + (lab ? 2 : 0);
  if (n > (f.size - kHeader) / per || kHeader + n * per != f.size)
    fail("%s: size %zu does not match %llu tokens", path.c_str(), f.size,
         static_cast<unsigned long long>(n));
  sh->n = static_cast<int64_t>(n);
  sh->token_bytes = static_cast<int>(tb);
  sh->labeled = lab != 0;
  sh->tokens = f.data + kHeader;
  sh->genre = lab ? sh->tokens + n * tb : nullptr;
  sh->pos = lab ? sh->genre + n : nullptr;
  // Every token must be inside the vocabulary.
  for (int64_t i = 0; i < sh->n; ++i) {
    const int32_t t = sh->token(i);
    if (t < 0 || t >= vocab)
      fail("%s: token %lld is id %d, outside the vocabulary of %d", path.c_str(),
           static_cast<long long>(i), t, vocab);
  }
}

}  // namespace

int32_t Shard::token(int64_t i) const {
  if (token_bytes == 2) {
    uint16_t v;
    std::memcpy(&v, tokens + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens + 4 * i, 4);
  return static_cast<int32_t>(v);
}

bool dataset_is_prepared(const std::string& dir) { return file_exists(dir + "/meta.json"); }

namespace {

// Every k-th document goes to validation (the last one for small corpora); 1 = validation.
std::vector<char> split_validation(size_t nd, double val_fraction) {
  const size_t k =
      val_fraction > 0 ? std::max<size_t>(2, static_cast<size_t>(1.0 / val_fraction + 0.5)) : 0;
  std::vector<char> is_val(nd, 0);
  if (k > 0 && nd >= 2) {
    for (size_t i = k / 2; i < nd; i += k) is_val[i] = 1;
    if (std::count(is_val.begin(), is_val.end(), 1) == 0) is_val[nd - 1] = 1;  // small corpora
  }
  return is_val;
}

// A corpus of one document (a single .txt file) would validate on its own training text. Its tail
// becomes a second, held-out document instead: val_fraction of its bytes, at least a quarter of
// them up to 4096 and at most half, cut after the last newline or space before that point (else at
// a UTF-8 character boundary). Returns the bytes held out (0: nothing to split).
size_t hold_out_tail(Corpus* c, double val_fraction) {
  if (c->docs.size() != 1 || val_fraction <= 0) return 0;
  Document& d = c->docs[0];
  const size_t n = d.text.size();
  if (n < 2) return 0;
  size_t tail = std::max(static_cast<size_t>(static_cast<double>(n) * val_fraction),
                         std::min<size_t>(n / 4, 4096));
  size_t cut = n - std::min(tail, n / 2);
  size_t b = cut;
  while (b > n / 2 && d.text[b - 1] != '\n' && d.text[b - 1] != ' ') --b;
  if (b > n / 2) cut = b;
  while (cut < n && (static_cast<unsigned char>(d.text[cut]) & 0xC0) == 0x80) ++cut;
  if (cut == 0 || cut >= n) return 0;
  Document t;
  t.name = d.name + " (held-out tail)";
  t.text = d.text.substr(cut);
  t.genre = d.genre;
  if (!d.pos.empty()) {
    t.pos.assign(d.pos.begin() + static_cast<int64_t>(cut), d.pos.end());
    d.pos.resize(cut);
  }
  d.text.resize(cut);
  c->docs.push_back(std::move(t));
  return n - cut;
}

// The tokens of one document with their byte offsets (begin empty: no offsets known).
struct DocTokens {
  std::vector<int32_t> ids;
  std::vector<uint32_t> begin;
};

// Appends a tokenized document (and the eos token) to its stream with its labels.
void append_doc(Stream* s, const DocTokens& t, const Document& d, const std::string& clean,
                bool labeled, int32_t eos) {
  for (size_t k = 0; k < t.ids.size(); ++k) {
    s->ids.push_back(t.ids[k]);
    if (!labeled) continue;
    size_t b = t.begin.empty() ? clean.size() : t.begin[k];
    while (b < clean.size() && (clean[b] == ' ' || clean[b] == '\n')) ++b;
    s->genre.push_back(static_cast<uint8_t>(d.genre));
    s->pos.push_back(b < d.pos.size() ? d.pos[b] : 255);
  }
  s->ids.push_back(eos);
  if (labeled) {
    s->genre.push_back(static_cast<uint8_t>(d.genre));
    s->pos.push_back(255);
  }
}

// The tokenizer of the data: a BPE trained on the training documents, or p.tokenizer.
struct DataTokenizer {
  bool trained = true;
  BpeModel bpe;
  Tokenizer tok;
  std::unordered_map<std::string, std::vector<int32_t>> cache;  // BPE word cache
  int vocab = 0;
  int32_t eos = -1;
  std::string json;  // tokenizer.json written into the data folder
};

void data_tokenizer_init(DataTokenizer* dt, const PrepareParams& p,
                         const std::vector<std::string_view>& train_texts) {
  if (p.tokenizer.empty()) {
    BpeTrainParams bp;
    bp.vocab_size = p.vocab_size;
    bpe_train(&dt->bpe, train_texts, bp);
    dt->vocab = static_cast<int>(dt->bpe.tokens.size());
    dt->eos = dt->bpe.special_id("<|endoftext|>");
    dt->json = bpe_tokenizer_json(dt->bpe);
    return;
  }
  dt->trained = false;
  tokenizer_load(&dt->tok, p.tokenizer);
  dt->vocab = tokenizer_vocab_size(dt->tok);
  dt->eos = p.eos_id >= 0 ? p.eos_id : tokenizer_token_id(dt->tok, "<|endoftext|>");
  if (dt->eos < 0)
    fail("%s: no end-of-text token to separate documents (no eos_token_id in the config and no "
         "<|endoftext|>)", p.tokenizer.c_str());
  if (dt->eos >= dt->vocab)
    fail("%s: the end-of-text id %d is outside the tokenizer's %d tokens", p.tokenizer.c_str(),
         dt->eos, dt->vocab);
  dt->json = read_text_file(p.tokenizer);
}

void data_tokenizer_encode(DataTokenizer* dt, const std::string& text, DocTokens* out) {
  out->ids.clear();
  out->begin.clear();
  if (dt->trained) {
    bpe_encode(dt->bpe, text, &out->ids, &out->begin, &dt->cache);
  } else {
    out->ids = tokenizer_encode(dt->tok, text, false);
  }
}

}  // namespace

void dataset_prepare(const std::string& corpus_path, const std::string& out_dir,
                     const PrepareParams& p) {
  Corpus corpus;
  corpus_load(&corpus, corpus_path);
  if (corpus.docs.empty()) fail("%s: no documents", corpus_path.c_str());
  const size_t held_out = hold_out_tail(&corpus, p.val_fraction);
  if (held_out)
    std::fprintf(stderr, "data: one document: its last %zu of %zu bytes are held out for "
                 "validation (not trained on)\n", held_out, held_out + corpus.docs[0].text.size());
  const size_t nd = corpus.docs.size();
  const std::vector<char> is_val = split_validation(nd, p.val_fraction);
  std::vector<std::string> clean(nd);
  std::vector<std::string_view> train_texts;
  for (size_t i = 0; i < nd; ++i) {
    clean[i] = utf8_sanitize(corpus.docs[i].text);
    if (clean[i].size() != corpus.docs[i].text.size()) corpus.docs[i].pos.clear();  // labels no longer align
    if (!is_val[i]) train_texts.push_back(clean[i]);
  }
  if (train_texts.empty()) for (const std::string& t : clean) train_texts.push_back(t);
  DataTokenizer dt;
  data_tokenizer_init(&dt, p, train_texts);
  Stream train, val;
  DocTokens toks;
  for (size_t i = 0; i < nd; ++i) {
    data_tokenizer_encode(&dt, clean[i], &toks);
    append_doc(is_val[i] ? &val : &train, toks, corpus.docs[i], clean[i], corpus.labeled, dt.eos);
  }
  if (val.ids.empty()) val = train;  // a one-byte document: nothing to hold out
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) fail("%s: cannot create the folder: %s", out_dir.c_str(), ec.message().c_str());
  write_file_atomic(out_dir + "/tokenizer.json", dt.json.data(), dt.json.size());
  write_shard(out_dir + "/train.bin", train, dt.vocab, corpus.labeled);
  write_shard(out_dir + "/val.bin", val, dt.vocab, corpus.labeled);
  nlohmann::ordered_json meta;
  meta["format"] = "moe.cpp token shards";
  meta["version"] = kVersion;
  meta["source"] = corpus_path;
  meta["vocab_size"] = dt.vocab;
  meta["eos_token_id"] = dt.eos;
  meta["train_tokens"] = train.ids.size();
  meta["val_tokens"] = val.ids.size();
  meta["documents"] = nd;
  if (held_out)
    meta["validation"] = strfmt("the held-out tail (%zu bytes) of the single document", held_out);
  meta["labeled"] = corpus.labeled;
  meta["genres"] = corpus.genres;
  meta["pos_tags"] = corpus.pos_tags;
  const std::string ms = meta.dump(2) + "\n";
  write_file_atomic(out_dir + "/meta.json", ms.data(), ms.size());
  std::fprintf(stderr, "data: %zu documents -> %zu train + %zu val tokens, vocab %d%s (%s)\n", nd,
               train.ids.size(), val.ids.size(), dt.vocab,
               dt.trained ? "" : strfmt(" from %s", p.tokenizer.c_str()).c_str(), out_dir.c_str());
}

void dataset_open(Dataset* d, const std::string& dir) {
  const std::string mp = dir + "/meta.json";
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_text_file(mp));
  } catch (const nlohmann::json::parse_error& e) {
    fail("%s: malformed JSON at byte %zu", mp.c_str(), static_cast<size_t>(e.byte));
  } catch (const nlohmann::json::exception&) {  // out_of_range: a number beyond double
    fail("%s: malformed JSON: a number is out of range", mp.c_str());
  }
  auto need_int = [&](const char* k) {
    if (!meta.is_object() || !meta.contains(k) || !meta[k].is_number_integer())
      fail("%s: field '%s' is missing or not an integer", mp.c_str(), k);
    return meta[k].get<int64_t>();
  };
  if (!meta.contains("format") || meta["format"] != "moe.cpp token shards")
    fail("%s: field 'format': not a moe.cpp token-shard folder", mp.c_str());
  if (need_int("version") != kVersion) fail("%s: field 'version': unsupported", mp.c_str());
  d->dir = dir;
  d->vocab = static_cast<int>(need_int("vocab_size"));
  d->eos_id = static_cast<int32_t>(need_int("eos_token_id"));
  if (d->vocab <= 0) fail("%s: field 'vocab_size' must be positive", mp.c_str());
  d->genres.clear();
  d->pos_tags.clear();
  auto label_names = [&](const char* k, std::vector<std::string>* out) {
    if (!meta.contains(k) || !meta[k].is_array()) return;
    for (auto& g : meta[k]) {
      if (!g.is_string()) fail("%s: field '%s': expected a list of strings", mp.c_str(), k);
      out->push_back(g.get<std::string>());
    }
  };
  label_names("genres", &d->genres);
  label_names("pos_tags", &d->pos_tags);
  open_shard(&d->train, dir + "/train.bin", d->vocab);
  open_shard(&d->val, dir + "/val.bin", d->vocab);
}

void dataset_train_batch(const Dataset& d, uint64_t seed, int64_t step, int micro, int B, int T,
                         int32_t* ids, int32_t* targets) {
  const Shard& s = d.train;
  if (s.n < T + 1)
    fail("%s: the training split has %lld tokens, fewer than --seq %d + 1", d.dir.c_str(),
         static_cast<long long>(s.n), T);
  const uint64_t range = static_cast<uint64_t>(s.n - T);  // start in [0, n - T - 1]
  for (int b = 0; b < B; ++b) {
    const uint64_t key = (static_cast<uint64_t>(step) << 20) ^ (static_cast<uint64_t>(micro) << 10) ^ b;
    const int64_t start = static_cast<int64_t>(rng_uniform(seed ^ 0x7f4a7c15ULL, key) * range);
    for (int t = 0; t < T; ++t) {
      ids[b * T + t] = s.token(start + t);
      targets[b * T + t] = s.token(start + t + 1);
    }
  }
}

bool dataset_val_window(const Dataset& d, int w, int n_windows, int T, int32_t* ids,
                        int32_t* targets) {
  const Shard& s = d.val;
  if (s.n < T + 1 || w >= n_windows) return false;
  const int64_t span = s.n - T - 1;
  const int64_t start = n_windows > 1 ? span * w / (n_windows - 1) : 0;
  for (int t = 0; t < T; ++t) {
    ids[t] = s.token(start + t);
    targets[t] = s.token(start + t + 1);
  }
  return true;
}

}  // namespace moe
