// The OpenAI JSON of replies: chat.completion, text_completion, their streamed chunks
// (chat.completion.chunk; text_completion with text deltas), usage and logprobs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/seq_stream.h"
#include "text/tokenizer.h"

namespace moe {

struct ReplyInfo {
  std::string id;       // chatcmpl-... / cmpl-...
  int64_t created = 0;  // unix seconds
  std::string model;
  bool chat = false;
  int top_logprobs = -1;   // -1: no logprobs
  bool return_tokens = false;
  const Tokenizer* tok = nullptr;
};

ReplyInfo reply_info(bool chat, const std::string& model, int top_logprobs, bool return_tokens,
                     const Tokenizer* tok);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"}.
nlohmann::json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens);

// The whole reply of a finished request (finish: stop or length).
nlohmann::json reply_full(const ReplyInfo& r, const std::vector<TokenOut>& toks,
                          const std::string& tail, FinishReason finish, const nlohmann::json& usage);

// One streamed chunk: the tokens' text (plus extra text) as a delta, and finish_reason when
// finish is stop or length. usage: null in every chunk when include_usage is set, else absent.
nlohmann::json reply_chunk(const ReplyInfo& r, const std::vector<TokenOut>& toks,
                           const std::string& extra_text, FinishReason finish, bool with_usage_null);

// The first chat chunk (the assistant role, empty content).
nlohmann::json reply_role_chunk(const ReplyInfo& r, bool with_usage_null);

// The last chunk of stream_options.include_usage: no choices, the usage.
nlohmann::json reply_usage_chunk(const ReplyInfo& r, const nlohmann::json& usage);

// "data: <json>\n\n" (invalid UTF-8 replaced).
std::string sse_event(const nlohmann::json& j);

// j as text, invalid UTF-8 replaced.
std::string json_text(const nlohmann::json& j);

}  // namespace moe
