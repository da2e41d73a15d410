// Byte-level BPE tokenizer training, as Hugging Face's ByteLevel BPE trainer does it: split text
// with the GPT-2 pre-tokenizer regex, map bytes to printable characters, then repeatedly merge the
// most frequent adjacent pair (ties: the smaller pair of ids). The result is written as a
// tokenizer.json that Hugging Face `tokenizers` and moe.cpp's tokenizer both load, and can encode
// text directly (used to tokenize the training corpus with labels aligned to the text).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moe {

struct BpeTrainParams {
  int vocab_size = 4096;   // bytes + merges + special tokens
  int min_frequency = 2;   // a pair seen fewer times is never merged
  std::vector<std::string> specials = {"<|endoftext|>"};
};

struct BpeModel {
  std::vector<std::string> tokens;                 // id -> token (byte-level characters)
  std::vector<std::pair<int32_t, int32_t>> merges; // in rank order; merge r creates id 256 + r
  std::unordered_map<uint64_t, int32_t> rank;      // (a << 32 | b) -> rank
  std::vector<std::string> specials;               // their ids follow the merges
  int32_t special_id(const std::string& s) const;  // -1 if not a special token
};

// Trains on the concatenation of texts (each may be any UTF-8; invalid bytes become U+FFFD).
void bpe_train(BpeModel* m, const std::vector<std::string_view>& texts, const BpeTrainParams& p);

// tokenizer.json text for the model.
std::string bpe_tokenizer_json(const BpeModel& m);

// Splits text into pre-tokens; for each, [begin, end) byte offsets into text.
void bpe_pretokenize(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>* spans);

// Encodes text (no special tokens). piece_begin, if non-null, receives for each id the byte offset
// of the pre-token it came from. cache memoises pre-token encodings across calls.
void bpe_encode(const BpeModel& m, std::string_view text, std::vector<int32_t>* ids,
                std::vector<uint32_t>* piece_begin,
                std::unordered_map<std::string, std::vector<int32_t>>* cache);

// Replaces invalid UTF-8 sequences with U+FFFD.
std::string utf8_sanitize(std::string_view s);

}  // namespace moe
