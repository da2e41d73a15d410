// Chat template loading and rendering, see chat_template.h.
#include "text/chat_template.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace moe {

namespace {

const char* kSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                "pad_token", "cls_token", "mask_token"};

}  // namespace

const std::string* ChatTemplate::token(const std::string& name) const {
  auto it = special_tokens.find(name);
  return it == special_tokens.end() ? nullptr : &it->second;
}

ChatTemplate chat_template_from_config(const nlohmann::ordered_json& config,
                                       const std::string& origin) {
  if (!config.is_object()) fail("%s: expected a JSON object", origin.c_str());
  ChatTemplate ct;
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null())
    fail("%s: chat_template: missing (this tokenizer has no chat template)", origin.c_str());
  if (it->is_string()) {
    ct.templates["default"] = jinja_compile(it->get<std::string>(), origin + ": chat_template");
  } else if (it->is_array()) {
    for (size_t i = 0; i < it->size(); ++i) {
      const auto& e = (*it)[i];
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() ||
          !e.contains("template") || !e["template"].is_string())
        fail("%s: chat_template[%zu]: expected {\"name\": string, \"template\": string}",
             origin.c_str(), i);
      std::string name = e["name"].get<std::string>();
      ct.templates[name] =
          jinja_compile(e["template"].get<std::string>(), origin + ": chat_template[" + name + "]");
    }
    if (ct.templates.empty()) fail("%s: chat_template: empty list", origin.c_str());
  } else {
    fail("%s: chat_template: expected a string or a list of {name, template}", origin.c_str());
  }
  for (const char* key : kSpecialTokens) {
    auto t = config.find(key);
    if (t == config.end() || t->is_null()) continue;
    std::string value;
    if (t->is_string()) {
      value = t->get<std::string>();
    } else if (t->is_object() && t->contains("content") && (*t)["content"].is_string()) {
      value = (*t)["content"].get<std::string>();
    } else {
      fail("%s: %s: expected a string or an object with a string \"content\"", origin.c_str(), key);
    }
    if (!value.empty()) ct.special_tokens[key] = value;
  }
  return ct;
}

ChatTemplate chat_template_load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("%s: cannot open", path.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("%s: invalid JSON: %s", path.c_str(), e.what());
  }
  return chat_template_from_config(j, path);
}

std::string chat_render(const ChatTemplate& tmpl, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, const nlohmann::ordered_json& extra) {
  if (!messages.is_array()) fail("chat_render: messages must be a JSON array");
  if (!extra.is_null() && !extra.is_object()) fail("chat_render: extra must be a JSON object");
  bool has_tools = extra.is_object() && extra.contains("tools") && !extra["tools"].is_null();
  const JinjaTemplate* t = nullptr;
  if (has_tools && tmpl.templates.count("tool_use"))
    t = &tmpl.templates.at("tool_use");
  else if (tmpl.templates.count("default"))
    t = &tmpl.templates.at("default");
  if (!t) {
    std::string names;
    for (const auto& [n, _] : tmpl.templates) names += (names.empty() ? "" : ", ") + n;
    fail("chat template: several templates (%s) and none is named 'default'", names.c_str());
  }
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = messages;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["tools"] = nullptr;
  ctx["documents"] = nullptr;
  for (const auto& [k, v] : tmpl.special_tokens) ctx[k] = v;
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) ctx[k] = v;
  return jinja_render(*t, ctx, tmpl.options);
}

std::vector<int32_t> chat_stop_ids(const std::vector<int>& eos_ids, const Tokenizer& tok,
                                   const ChatTemplate* tmpl) {
  std::vector<int32_t> ids(eos_ids.begin(), eos_ids.end());
  std::vector<std::string> names = {"<|im_end|>", "<|eot_id|>", "<|end|>", "<|return|>",
                                    "<|call|>", "<end_of_turn>", "<|endoftext|>",
                                    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"};
  if (tmpl)
    if (const std::string* eos = tmpl->token("eos_token")) names.push_back(*eos);
  for (const std::string& n : names) {
    const int32_t id = tokenizer_token_id(tok, n);
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

}  // namespace moe
