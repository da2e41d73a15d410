// Parsing of OpenAI /v1/chat/completions and /v1/completions bodies into one generation request.
//
// Every missing, mistyped or out-of-range field is an ApiError 400 naming the field. Chat
// messages (system, user, assistant, tool; string content or an array of {"type": "text"} parts)
// are rendered with the model's chat template and tokenized without extra special tokens; a
// completion prompt is a string (tokenized with the tokenizer's special tokens, as llama-server
// does) or an array of token ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "infer/sampler.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace moe {

struct ServeRequest {
  bool chat = false;
  std::string model;               // as the client named it ("" if absent)
  std::vector<int32_t> prompt;     // rendered and tokenized
  int max_tokens = 0;              // resolved: never past the context
  SamplerParams sampling;
  std::vector<std::string> stop;   // stop strings (not included in the output)
  int top_logprobs = -1;           // -1: no logprobs; else how many alternatives (0..20)
  bool ignore_eos = false;
  bool stream = false;
  bool include_usage = false;      // stream_options.include_usage
  bool return_tokens = false;      // extension: the generated ids in each choice
};

// What parsing needs from the server. tok and tmpl may be null (a model folder without them):
// then text prompts and chat messages are a 400.
struct RequestContext {
  const Tokenizer* tok = nullptr;
  const ChatTemplate* tmpl = nullptr;
  int vocab = 0;
  int ctx = 0;  // per-sequence context
};

ServeRequest parse_generation_request(const nlohmann::json& body, bool chat,
                                      const RequestContext& rc);

// The chat template applied to messages (validated as for chat completions).
std::string render_messages(const nlohmann::json& messages, const RequestContext& rc,
                            bool add_generation_prompt);

// The body parsed as a JSON object, or ApiError 400.
nlohmann::json parse_json_body(const std::string& body);

}  // namespace moe
