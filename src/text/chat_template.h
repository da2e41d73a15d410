// Chat templates from a Hugging Face tokenizer_config.json, rendered like transformers'
// apply_chat_template(messages, add_generation_prompt=..., tools=..., **kwargs, tokenize=False).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "text/jinja.h"
#include "text/tokenizer.h"

namespace moe {

struct ChatTemplate {
  // Named templates; a plain string chat_template is stored as "default".
  std::map<std::string, JinjaTemplate> templates;
  // Special tokens passed to the template when set: bos_token, eos_token, unk_token, sep_token,
  // pad_token, cls_token, mask_token (strings, or the content of {"content": ...} objects).
  std::map<std::string, std::string> special_tokens;
  JinjaRenderOptions options;  // strftime_now clock

  const std::string* token(const std::string& name) const;
};

// Loads chat_template (a string, or a list of {"name", "template"}) and the special tokens.
// Throws MoeError naming the file and field on a missing or malformed template.
ChatTemplate chat_template_load(const std::string& tokenizer_config_path);
// Same from an already parsed tokenizer_config.json; `origin` names it in errors.
ChatTemplate chat_template_from_config(const nlohmann::ordered_json& config,
                                       const std::string& origin);

// Renders with messages, add_generation_prompt, tools=None, documents=None, the special tokens,
// then every key of `extra` (tools, enable_thinking, reasoning_effort, ...), which override.
// Uses the "tool_use" template when tools are given and one exists, else "default".
std::string chat_render(const ChatTemplate& tmpl, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, const nlohmann::ordered_json& extra = {});

// The ids that end a reply: `eos_ids` (the model's), the template's eos_token, and the
// end-of-turn markers of the common chat formats that this vocabulary has. tmpl may be null.
std::vector<int32_t> chat_stop_ids(const std::vector<int>& eos_ids, const Tokenizer& tok,
                                   const ChatTemplate* tmpl);

}  // namespace moe
