// Native Hugging Face `tokenizer.json` tokenizer (BPE models) that reproduces the token ids of
// the Rust `tokenizers` library: added tokens, normalizers, pre-tokenizers, BPE with byte
// fallback, post-processors and decoders, plus a streaming detokenizer for generation.
//
// Encoding follows the Rust pipeline step by step:
//   1. invalid UTF-8 in the input is replaced by U+FFFD (Rust's String::from_utf8_lossy; the
//      Rust API takes &str, so this is what its Python binding's lossy callers see),
//   2. added tokens with normalized=false are split out of the raw text (leftmost-longest),
//   3. each remaining section is normalized, then added tokens with normalized=true are split out
//      of the normalized text,
//   4. the pre-tokenizer splits each section into words, BPE turns each word into ids,
//   5. the post-processor adds special tokens when asked.
// Regexes (Split, Replace) are Oniguruma patterns in the file; they are translated to PCRE2 (UTF +
// UCP, JIT) with Oniguruma's meaning of \s (which includes U+0085), \w, \h and \uHHHH.
//
// Thread safety: a loaded Tokenizer is immutable except for its BPE word cache, which is guarded
// by sharded mutexes, so tokenizer_encode/decode may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace moe {

// ---- Components (plain data, filled by tokenizer_load) -----------------------------------------

struct TokRegex;  // compiled PCRE2 pattern (tokenizer_regex.cpp)

// A Split/Replace pattern: {"String": "..."} (literal) or {"Regex": "..."} (Oniguruma syntax).
struct TokPattern {
  bool is_regex = false;
  std::string text;                    // as written in the file
  std::shared_ptr<const TokRegex> re;  // compiled; for literals an escaped regex
};

enum class TokSplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
enum class TokPrependScheme { Always, First, Never };

enum class TokNormKind {
  None,
  Sequence,
  NFC,
  NFD,
  NFKC,
  NFKD,
  Lowercase,
  Prepend,
  Replace,
  Strip,
  StripAccents,
  Nmt,
  ByteLevel
};
struct TokNormalizer {
  TokNormKind kind = TokNormKind::None;
  std::string str;     // Prepend: text; Replace: content
  TokPattern pattern;  // Replace
  bool strip_left = false, strip_right = false;
  std::vector<TokNormalizer> children;  // Sequence
};

enum class TokPreKind {
  None,
  Sequence,
  ByteLevel,
  Split,
  Metaspace,
  Digits,
  Whitespace,
  WhitespaceSplit,
  Punctuation,
  Bert
};
struct TokPreTokenizer {
  TokPreKind kind = TokPreKind::None;
  bool add_prefix_space = false, use_regex = true;         // ByteLevel
  TokPattern pattern;                                      // Split
  TokSplitBehavior behavior = TokSplitBehavior::Isolated;  // Split, Punctuation
  bool invert = false;                                     // Split
  std::string replacement;                                 // Metaspace (one character)
  TokPrependScheme prepend_scheme = TokPrependScheme::Always;
  bool split = true;                      // Metaspace
  bool individual_digits = false;         // Digits
  std::vector<TokPreTokenizer> children;  // Sequence
};

enum class TokDecKind {
  None,
  Sequence,
  ByteLevel,
  Metaspace,
  ByteFallback,
  Fuse,
  Strip,
  Replace,
  BPEDecoder
};
struct TokDecoder {
  TokDecKind kind = TokDecKind::None;
  std::string str;     // Metaspace: replacement; Strip: content; Replace: content; BPE: suffix
  TokPattern pattern;  // Replace
  TokPrependScheme prepend_scheme = TokPrependScheme::Always;  // Metaspace
  size_t start = 0, stop = 0;                                  // Strip
  std::vector<TokDecoder> children;                            // Sequence
};

enum class TokPostKind { None, Sequence, Template, ByteLevel, Bert, Roberta };
struct TokTemplatePiece {
  bool is_special = false;
  int sequence = 0;          // 0 = A, 1 = B (sequence pieces)
  std::vector<int32_t> ids;  // special pieces: the ids of the special token entry
};
struct TokPostProcessor {
  TokPostKind kind = TokPostKind::None;
  std::vector<TokTemplatePiece> single, pair;  // Template
  int32_t cls_id = -1, sep_id = -1;            // Bert, Roberta
  std::vector<TokPostProcessor> children;      // Sequence
};

// Open-addressing map from strings to ids (the vocab). Keys live in one arena.
struct TokStrMap {
  std::string arena;
  std::vector<uint32_t> key_off, key_len;
  std::vector<int32_t> vals;
  std::vector<int32_t> slots;  // index into vals, -1 empty; size is a power of two
  void reserve(size_t n);
  // Inserts or overwrites (the last duplicate wins, as with serde / JSON objects).
  void put(std::string_view key, int32_t val);
  int32_t get(std::string_view key) const;  // -1 if absent
  size_t size() const { return vals.size(); }
  std::string_view key(size_t i) const { return {arena.data() + key_off[i], key_len[i]}; }
};

// Open-addressing map from a pair of ids to (rank, merged id).
struct TokPairMap {
  struct Slot {
    uint64_t key;
    uint32_t rank;
    int32_t new_id;
  };
  std::vector<Slot> slots;  // key == kEmpty marks an empty slot
  size_t count = 0;
  static constexpr uint64_t kEmpty = ~0ull;
  void reserve(size_t n);
  void put(int32_t a, int32_t b, uint32_t rank, int32_t new_id);
  const Slot* get(int32_t a, int32_t b) const;
};

struct TokBpeCache;  // sharded, mutex-guarded word cache (tokenizer_bpe.cpp)

struct TokBpe {
  TokStrMap vocab;
  std::vector<std::string> vocab_r;  // id -> token ("" for holes)
  std::vector<uint8_t> has_id;       // id -> 1 if vocab_r[id] is a token
  TokPairMap merges;
  std::string unk_token;  // "" = none
  bool has_unk = false;
  int32_t unk_id = -1;         // -1 if the unk token is not in the vocab
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  int32_t byte_ids[256] = {};    // <0xNN> ids, -1 if absent
  std::vector<int32_t> bmp_ids;  // single-code-point tokens below U+10000 (no prefix/suffix)
};

struct TokAddedToken {
  std::string content;
  std::string match;  // what is matched: content, or its normalized form if normalized
  int32_t id = -1;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

// Leftmost-longest matcher over a set of added tokens (a byte trie).
struct TokAddedMatcher {
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t token = -1;                             // index into Tokenizer::added
  };
  std::vector<Node> nodes;
  bool first_byte[256] = {};
  bool empty() const { return nodes.size() <= 1; }
};

struct Tokenizer {
  std::string path;  // for messages
  TokNormalizer normalizer;
  TokPreTokenizer pre_tokenizer;
  TokBpe model;
  TokPostProcessor post_processor;
  TokDecoder decoder;
  std::vector<TokAddedToken> added;                  // one per distinct id, in file order
  std::unordered_map<int32_t, int32_t> added_by_id;  // id -> index into added
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_set<std::string> special_set;  // contents of special added tokens
  TokAddedMatcher raw_matcher, norm_matcher;    // normalized=false / normalized=true tokens
  std::shared_ptr<TokBpeCache> cache;
};

// ---- API ---------------------------------------------------------------------------------------

// Loads a tokenizer.json. Throws MoeError naming the file and the component on any problem.
void tokenizer_load(Tokenizer* t, const std::string& path);
void tokenizer_load_json(Tokenizer* t, const std::string& json_text,
                         const std::string& path_for_messages);

// Token ids of `text`. add_special applies the post-processor's special tokens (e.g. BOS).
std::vector<int32_t> tokenizer_encode(const Tokenizer& t, std::string_view text, bool add_special);

// Text of `ids`. Unknown ids are skipped (as in Rust); skip_special drops special added tokens.
std::string tokenizer_decode(const Tokenizer& t, const std::vector<int32_t>& ids,
                             bool skip_special);

// The id of a token (added tokens first, then the vocab), -1 if absent.
int32_t tokenizer_token_id(const Tokenizer& t, std::string_view token);

// Number of ids (one past the largest id).
int32_t tokenizer_vocab_size(const Tokenizer& t);

// Streaming detokenizer (Rust's DecodeStream): each step returns the text added by `id`, only once
// it is complete UTF-8 (a step may return ""); the concatenation of all steps equals
// tokenizer_decode of the whole sequence.
struct DecodeStream {
  bool skip_special = false;
  std::vector<int32_t> ids;
  std::string prefix;
  size_t prefix_index = 0;
};
std::string decode_stream_step(const Tokenizer& t, DecodeStream* s, int32_t id);

// ---- Internals shared by the tokenizer*.cpp files ---------------------------------------------

namespace tok {

// One piece of text during encoding. `lead` counts the leading bytes that come from the first
// character of the original input (Rust's offsets_original().0 == 0, used by Metaspace "first").
struct Piece {
  std::string text;
  int32_t lead = 0;
  int32_t added_id = -1;  // >= 0: an added token, not normalized / pre-tokenized further
};

// UTF-8 helpers (input is valid UTF-8 unless stated).
uint32_t utf8_next(std::string_view s, size_t* i);
void utf8_append(std::string* out, uint32_t cp);
inline size_t utf8_len(uint8_t lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
std::string utf8_lossy(std::string_view bytes);  // Rust's String::from_utf8_lossy
bool utf8_valid(std::string_view bytes);
bool is_whitespace(uint32_t cp);   // Rust char::is_whitespace (White_Space)
bool is_numeric(uint32_t cp);      // Rust char::is_numeric (Nd, Nl, No)
bool is_punctuation(uint32_t cp);  // ASCII punctuation or Unicode P*
bool is_word_char(uint32_t cp);    // Rust regex \w
bool is_mark(uint32_t cp);         // Mn, Mc, Me

// The GPT-2 byte <-> char tables: byte b is written as the UTF-8 string byte_char(b).
const std::string& byte_char(uint8_t b);
int byte_of_char(uint32_t cp);  // -1 if cp is not one of the 256 chars

// Regexes (tokenizer_regex.cpp). `where` names the component for error messages.
std::shared_ptr<const TokRegex> regex_compile(const std::string& onig_pattern,
                                              const std::string& where);
std::shared_ptr<const TokRegex> regex_literal(const std::string& text, const std::string& where);
std::string regex_translate(const std::string& onig_pattern);  // exposed for tests
// Rust's Pattern::find_matches: (start, end, is_match) spans covering all of `s`.
struct Span {
  size_t start, end;
  bool match;
};
void regex_find_matches(const TokRegex& re, std::string_view s, std::vector<Span>* out);

// Normalizers (tokenizer_normalizers.cpp).
void normalize(const TokNormalizer& n, Piece* p);

// Pre-tokenizers (tokenizer_pre_tokenizers.cpp): splits `pieces` in place (added-token pieces
// pass through untouched).
void pre_tokenize(const TokPreTokenizer& pt, std::vector<Piece>* pieces);
void split_spans(const Piece& p, const std::vector<Span>& spans, TokSplitBehavior behavior,
                 std::vector<Piece>* out);

// BPE (tokenizer_bpe.cpp): appends the ids of one pre-token.
void bpe_encode_word(const TokBpe& m, TokBpeCache* cache, std::string_view word,
                     std::vector<int32_t>* out);
std::shared_ptr<TokBpeCache> bpe_cache_new();
void bpe_build(TokBpe* m, const std::vector<std::pair<std::string, std::string>>& merges,
               const std::string& where);

// Decoders (tokenizer_decoders.cpp): Rust's decode_chain.
void decode_chain(const TokDecoder& d, std::vector<std::string>* tokens);

// Post-processors (tokenizer_post_processors.cpp).
void post_process(const TokPostProcessor& pp, std::vector<int32_t>* ids, bool add_special);

// Added tokens (tokenizer.cpp).
void matcher_build(TokAddedMatcher* m, const std::vector<TokAddedToken>& added, bool normalized);

}  // namespace tok

}  // namespace moe
