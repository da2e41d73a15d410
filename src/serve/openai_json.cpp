#include "serve/openai_json.h"

#include <chrono>
#include <mutex>
#include <cstdio>
#include <random>

namespace moe {

using nlohmann::json;

namespace {

// A token's text and bytes (its bytes may be part of a UTF-8 character).
std::string token_bytes(const Tokenizer* tok, int32_t id) {
  if (!tok) return "<" + std::to_string(id) + ">";
  return tokenizer_decode(*tok, {id}, false);
}

json bytes_array(const std::string& b) {
  json a = json::array();
  for (unsigned char c : b) a.push_back(static_cast<int>(c));
  return a;
}

json chat_logprob_entry(const ReplyInfo& r, const TokenOut& t) {
  const std::string b = token_bytes(r.tok, t.id);
  json top = json::array();
  for (const auto& alt : t.top) {
    const std::string ab = token_bytes(r.tok, alt.first);
    top.push_back({{"token", tok::utf8_lossy(ab)}, {"logprob", alt.second}, {"bytes", bytes_array(ab)}});
  }
  return {{"token", tok::utf8_lossy(b)}, {"logprob", t.logprob}, {"bytes", bytes_array(b)},
          {"top_logprobs", top}};
}

// Chat: {"content": [entries]}; completions: {"tokens", "token_logprobs", "top_logprobs",
// "text_offset"} (offsets from `offset`, the text before these tokens).
json logprobs_json(const ReplyInfo& r, const std::vector<TokenOut>& toks, size_t offset) {
  if (r.top_logprobs < 0) return nullptr;
  if (r.chat) {
    json content = json::array();
    for (const TokenOut& t : toks) content.push_back(chat_logprob_entry(r, t));
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  for (const TokenOut& t : toks) {
    tokens.push_back(tok::utf8_lossy(token_bytes(r.tok, t.id)));
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& alt : t.top) top[tok::utf8_lossy(token_bytes(r.tok, alt.first))] = alt.second;
    tops.push_back(top);
    offs.push_back(offset);
    offset += t.text.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

const char* finish_json_name(FinishReason f) {
  return f == FINISH_LENGTH ? "length" : "stop";
}

json base(const ReplyInfo& r, const char* object) {
  return {{"id", r.id}, {"object", object}, {"created", r.created}, {"model", r.model},
          {"system_fingerprint", "moe.cpp"}};
}

json token_ids(const std::vector<TokenOut>& toks) {
  json a = json::array();
  for (const TokenOut& t : toks) a.push_back(t.id);
  return a;
}

}  // namespace

ReplyInfo reply_info(bool chat, const std::string& model, int top_logprobs, bool return_tokens,
                     const Tokenizer* tok) {
  static std::mt19937_64 rng(std::random_device{}());
  static std::mutex mu;
  char hex[17];
  {
    std::lock_guard<std::mutex> g(mu);
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(rng()));
  }
  ReplyInfo r;
  r.id = std::string(chat ? "chatcmpl-" : "cmpl-") + hex;
  r.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch()).count();
  r.model = model;
  r.chat = chat;
  r.top_logprobs = top_logprobs;
  r.return_tokens = return_tokens;
  r.tok = tok;
  return r;
}

json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

json reply_full(const ReplyInfo& r, const std::vector<TokenOut>& toks, const std::string& tail,
                FinishReason finish, const json& usage) {
  std::string text;
  for (const TokenOut& t : toks) text += t.text;
  text += tail;
  json choice = {{"index", 0}, {"logprobs", logprobs_json(r, toks, 0)},
                 {"finish_reason", finish_json_name(finish)}};
  if (r.chat) choice["message"] = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  else choice["text"] = text;
  if (r.return_tokens) choice["tokens"] = token_ids(toks);
  json j = base(r, r.chat ? "chat.completion" : "text_completion");
  j["choices"] = json::array({choice});
  j["usage"] = usage;
  return j;
}

json reply_chunk(const ReplyInfo& r, const std::vector<TokenOut>& toks, const std::string& extra_text,
                 FinishReason finish, bool with_usage_null) {
  std::string text;
  for (const TokenOut& t : toks) text += t.text;
  text += extra_text;
  const bool last = finish == FINISH_STOP || finish == FINISH_LENGTH;
  json choice = {{"index", 0}, {"logprobs", toks.empty() ? json(nullptr) : logprobs_json(r, toks, 0)},
                 {"finish_reason", last ? json(finish_json_name(finish)) : json(nullptr)}};
  if (r.chat) choice["delta"] = (text.empty() && last) ? json::object() : json{{"content", text}};
  else choice["text"] = text;
  if (r.return_tokens) choice["tokens"] = token_ids(toks);
  json j = base(r, r.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array({choice});
  if (with_usage_null) j["usage"] = nullptr;
  return j;
}

json reply_role_chunk(const ReplyInfo& r, bool with_usage_null) {
  json j = base(r, "chat.completion.chunk");
  j["choices"] = json::array({{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  if (with_usage_null) j["usage"] = nullptr;
  return j;
}

json reply_usage_chunk(const ReplyInfo& r, const json& usage) {
  json j = base(r, r.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage;
  return j;
}

std::string json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return "data: " + json_text(j) + "\n\n"; }

}  // namespace moe
