// GGUF tokenizer metadata from a Hugging Face tokenizer.json (the inverse of
// text/gguf_tokenizer.h), for `moe export --gguf`, in the keys and conventions of llama.cpp's
// convert_hf_to_gguf.py, so that llama.cpp (and moe.cpp) tokenize the exported file as the
// tokenizer.json does:
//
// - Byte-level BPE (a ByteLevel pre-tokenizer): tokenizer.ggml.model "gpt2", the tokens by id,
//   the merges as "LEFT RIGHT", and tokenizer.ggml.pre naming the split the pre-tokenizer applies
//   (gpt2, qwen2, llama-bpe, gpt-4o or deepseek-v3: the ones text/gguf_tokenizer.h reads; another
//   split is a one-line error naming the file and 'pre_tokenizer').
// - SentencePiece-style BPE (byte_fallback, a "▁" Prepend / Replace normalizer or a Metaspace
//   pre-tokenizer: Llama 2, Mixtral): tokenizer.ggml.model "llama", the pieces by id, and scores
//   that order the merges as the file does (a piece's score is minus the rank of the first merge
//   that makes it; pieces no merge makes score -1e9), tokenizer.ggml.add_space_prefix.
// Token types: special added tokens are control (3), other added tokens user-defined (4); for
// "llama", <0xXX> pieces are bytes (6) and the unk token unknown (2); the rest normal (1). Ids
// the tokenizer does not use, up to the model's vocabulary, become "[PAD<id>]" tokens of type
// unused (5), as llama.cpp's converter writes them. Also tokenizer.ggml.add_bos_token (true when
// the post-processor prepends a special token), unknown_token_id, and tokenizer.chat_template when
// given. Other tokenizer models (WordPiece, Unigram) are a one-line error.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "io/gguf.h"

namespace moe {

// Appends the keys for the tokenizer.json text `json` (`path` names it in errors) of a model with
// n_vocab embedding rows; chat_template ("" for none) becomes tokenizer.chat_template.
void gguf_tokenizer_kv(const std::string& json, const std::string& path, int64_t n_vocab,
                       const std::string& chat_template,
                       std::vector<std::pair<std::string, GgufValue>>* kv);

// The chat template of a checkpoint folder: tokenizer_config.json's chat_template (a string, or
// the entry named "default" of a list), else chat_template.jinja; "" when there is none.
std::string hf_chat_template(const std::string& dir);

}  // namespace moe
