#include "serve/request.h"

#include <random>

#include "serve/api_error.h"

namespace moe {

using nlohmann::json;

[[noreturn]] void api_bad_request(const std::string& message, const std::string& code) {
  throw ApiError(400, "invalid_request_error", code, message);
}

json api_error_json(int status, const std::string& type, const std::string& code,
                    const std::string& message) {
  return {{"error", {{"message", message}, {"type", type}, {"code", code}, {"param", nullptr}}}};
}

json parse_json_body(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) api_bad_request("the request body is not valid JSON", "invalid_json");
  if (!j.is_object()) api_bad_request("the request body must be a JSON object", "invalid_json");
  return j;
}

namespace {

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& body, const char* name, bool def) {
  const json* v = field(body, name);
  if (!v) return def;
  if (!v->is_boolean()) api_bad_request(std::string("'") + name + "' must be a boolean");
  return v->get<bool>();
}

double get_number(const json& body, const char* name, double def, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return def;
  if (!v->is_number()) api_bad_request(std::string("'") + name + "' must be a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    api_bad_request(std::string("'") + name + "' must be between " + std::to_string(lo) + " and " +
                    std::to_string(hi));
  return x;
}

int64_t get_int(const json& body, const char* name, int64_t def, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return def;
  if (!v->is_number_integer()) api_bad_request(std::string("'") + name + "' must be an integer");
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                        ? INT64_MAX : v->get<int64_t>();
  if (x < lo || x > hi)
    api_bad_request(std::string("'") + name + "' must be between " + std::to_string(lo) + " and " +
                    std::to_string(hi));
  return x;
}

// Stop strings are searched for after every token: keep them short.
const size_t kMaxStopBytes = 256;

std::vector<std::string> parse_stop(const json& body) {
  std::vector<std::string> out;
  const json* v = field(body, "stop");
  if (!v) return out;
  if (!v->is_string() && (!v->is_array() || v->size() > 16))
    api_bad_request("'stop' must be a string or a list of at most 16 strings");
  const json list = v->is_string() ? json::array({*v}) : *v;
  v = &list;
  for (const json& s : *v) {
    if (!s.is_string()) api_bad_request("'stop' must be a string or a list of strings");
    if (!s.get<std::string>().empty()) out.push_back(s.get<std::string>());
  }
  for (const std::string& s : out)
    if (s.size() > kMaxStopBytes)
      api_bad_request("a 'stop' string is longer than " + std::to_string(kMaxStopBytes) + " bytes");
  return out;
}

// A message's content as one string: a string, null, or an array of text parts.
std::string message_text(const json& content, size_t i) {
  const std::string where = "'messages[" + std::to_string(i) + "].content'";
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) api_bad_request(where + " must be a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      api_bad_request(where + " parts must be {\"type\": \"text\", \"text\": string}");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<int32_t> parse_prompt(const json& body, const RequestContext& rc) {
  const json* p = field(body, "prompt");
  if (!p) api_bad_request("'prompt' is required", "missing_field");
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
  if (p->is_string()) {
    if (!rc.tok) api_bad_request("this model has no tokenizer.json: send 'prompt' as token ids");
    return tokenizer_encode(*rc.tok, p->get<std::string>(), true);
  }
  if (!p->is_array()) api_bad_request("'prompt' must be a string or an array of token ids");
  std::vector<int32_t> ids;
  for (const json& x : *p) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= rc.vocab)
      api_bad_request("'prompt' token ids must be integers in [0, " + std::to_string(rc.vocab) + ")");
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return ids;
}

void parse_logprobs(const json& body, bool chat, ServeRequest* r) {
  if (chat) {
    const bool on = get_bool(body, "logprobs", false);
    const int64_t top = get_int(body, "top_logprobs", -1, 0, 20);
    if (top >= 0 && !on) api_bad_request("'top_logprobs' requires 'logprobs': true");
    r->top_logprobs = on ? static_cast<int>(std::max<int64_t>(top, 0)) : -1;
  } else {
    r->top_logprobs = static_cast<int>(get_int(body, "logprobs", -1, 0, 5));
  }
}

}  // namespace

std::string render_messages(const json& messages, const RequestContext& rc, bool add_generation_prompt) {
  if (!messages.is_array() || messages.empty())
    api_bad_request("'messages' must be a non-empty array", messages.is_null() ? "missing_field" : "invalid_value");
  if (!rc.tmpl) api_bad_request("this model has no chat template (tokenizer_config.json)");
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = "'messages[" + std::to_string(i) + "]";
    if (!m.is_object()) api_bad_request(where + "' must be an object");
    if (!m.contains("role") || !m["role"].is_string()) api_bad_request(where + ".role' must be a string");
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" && role != "developer")
      api_bad_request(where + ".role' must be system, user, assistant, tool or developer");
    if (!m.contains("content") && role != "assistant") api_bad_request(where + ".content' is required");
    msgs.push_back({{"role", role == "developer" ? "system" : role},
                    {"content", message_text(m.value("content", json()), i)}});
  }
  try {
    return chat_render(*rc.tmpl, msgs, add_generation_prompt);
  } catch (const std::exception& e) {
    api_bad_request(std::string("the chat template failed on these messages: ") + e.what());
  }
}

ServeRequest parse_generation_request(const json& body, bool chat, const RequestContext& rc) {
  ServeRequest r;
  r.chat = chat;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) api_bad_request("'model' must be a string");
    r.model = m->get<std::string>();
  }
  if (chat) {
    const json* msgs = field(body, "messages");
    if (!msgs) api_bad_request("'messages' is required", "missing_field");
    if (!rc.tok) api_bad_request("this model has no tokenizer.json");
    r.prompt = tokenizer_encode(*rc.tok, render_messages(*msgs, rc, true), false);
  } else {
    r.prompt = parse_prompt(body, rc);
  }
  if (r.prompt.empty()) api_bad_request("the prompt is empty");
  if (get_int(body, "n", 1, 1, 1) != 1) api_bad_request("only 'n' = 1 is supported");
  const int64_t room = rc.ctx - static_cast<int64_t>(r.prompt.size());
  if (room <= 0)
    api_bad_request("the prompt has " + std::to_string(r.prompt.size()) +
                    " tokens, which leaves no room in the context of " + std::to_string(rc.ctx),
                    "context_length_exceeded");
  int64_t max_tokens = get_int(body, "max_tokens", -1, 0, INT32_MAX);
  max_tokens = get_int(body, "max_completion_tokens", max_tokens, 0, INT32_MAX);
  if (max_tokens > room)
    api_bad_request("max_tokens " + std::to_string(max_tokens) + " + the prompt's " +
                    std::to_string(r.prompt.size()) + " tokens exceed the context of " +
                    std::to_string(rc.ctx), "context_length_exceeded");
  r.max_tokens = static_cast<int>(max_tokens < 0 ? room : max_tokens);
  r.sampling.temperature = static_cast<float>(get_number(body, "temperature", 1.0, 0.0, 2.0));
  r.sampling.top_p = static_cast<float>(get_number(body, "top_p", 1.0, 0.0, 1.0));
  if (r.sampling.top_p <= 0.0f) api_bad_request("'top_p' must be greater than 0");
  r.sampling.top_k = static_cast<int>(get_int(body, "top_k", 0, 0, INT32_MAX));
  r.sampling.seed = static_cast<uint64_t>(
      get_int(body, "seed", static_cast<int64_t>(std::random_device{}() >> 1), INT64_MIN, INT64_MAX));
  r.stop = parse_stop(body);
  if (!r.stop.empty() && !rc.tok) api_bad_request("'stop' needs a tokenizer.json");
  parse_logprobs(body, chat, &r);
  r.ignore_eos = get_bool(body, "ignore_eos", false);
  r.stream = get_bool(body, "stream", false);
  r.return_tokens = get_bool(body, "return_tokens", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) api_bad_request("'stream_options' must be an object");
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  return r;
}

}  // namespace moe
