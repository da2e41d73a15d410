// Tokenizer and chat template from a GGUF file's metadata, as the Hugging Face files they came
// from: tokenizer.ggml.* becomes a tokenizer.json (loaded by the engine's own tokenizer) and
// tokenizer.chat_template a tokenizer_config.json's chat_template.
//
// tokenizer.ggml.model "gpt2" (byte-level BPE): the vocab and merges as stored; control tokens
// (token_type 3) become special added tokens, user-defined ones (4) plain added tokens; the
// pre-tokenizer comes from tokenizer.ggml.pre: default/gpt2/olmo (GPT-2's split), qwen2,
// llama-bpe, deepseek-v3, gpt-4o (each split pattern as the Hugging Face tokenizer of that
// family has it; qwen2 also NFC-normalizes as Qwen's does; llama-bpe and gpt-4o take a word
// found whole in the vocab before merging, as Llama 3's and o200k's do). Every token is in the
// vocab (added tokens take their ids from there, as in Hugging Face's loader).
// tokenizer.ggml.model "llama" (SentencePiece BPE: Llama 2, Mixtral): the tokenizer.json form of
// Llama 2's Hugging Face tokenizer: the pieces as vocab, the merges derived from the pieces'
// scores as Hugging Face's converter derives them (every split of a piece into two pieces, the
// pieces ordered by score), byte fallback when there are byte tokens (type 6), the unknown token
// (unknown_token_id, else the first of type 2), "▁" replacing spaces and, unless
// tokenizer.ggml.add_space_prefix is false, prepended to each section of text; unknown and
// control tokens are special added tokens.
// tokenizer.ggml.add_bos_token prepends BOS (default: false for gpt2, true for llama, as in
// llama.cpp) and add_eos_token appends EOS. Other models or pre-tokenizers are a one-line error
// naming the key.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "io/gguf.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace moe {

// tokenizer.json text for g's tokenizer metadata.
std::string gguf_tokenizer_json(const GgufFile& g);

// The tokenizer.ggml.pre name whose split (as gguf_tokenizer_json writes it) is a tokenizer.json's
// pre_tokenizer, comparing only what decides the split; "" if no name fits.
std::string gguf_pre_name_of(const nlohmann::json& pre_tokenizer);

// The chat template and its special tokens (bos_token / eos_token) from g.
ChatTemplate gguf_chat_template(const GgufFile& g);

// The tokenizer of a model: MODEL.gguf's metadata, or MODEL/tokenizer.json; `override_path`
// (a tokenizer.json) wins when set.
void tokenizer_load_for_model(Tokenizer* t, const std::string& model, const std::string& override_path);

}  // namespace moe
