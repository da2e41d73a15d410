// A Jinja template engine for Hugging Face chat templates: the subset of Jinja2 that real
// tokenizer_config.json chat templates use, rendered the way transformers does (jinja2 sandbox,
// trim_blocks=True, lstrip_blocks=True, default Undefined, its tojson / raise_exception /
// strftime_now globals, loop controls).
//
//   JinjaTemplate t = jinja_compile(src, "tokenizer_config.json: chat_template");
//   std::string s = jinja_render(t, {{"messages", msgs}, {"add_generation_prompt", true}});
//
// Errors are MoeError with one line: "<name>:<line>:<col>: <message>" for syntax and runtime
// errors, "chat template raised: <msg>" for raise_exception(msg).
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace moe {

namespace jinja {
struct Node;
}

struct JinjaTemplate {
  std::string name;
  std::shared_ptr<const jinja::Node> root;
};

struct JinjaRenderOptions {
  // Clock of strftime_now(); unset means the local time now (Python's datetime.now()).
  std::function<std::tm()> now;
  // Loop iterations plus macro calls allowed in one render; past it the render fails.
  uint64_t max_steps = 2'000'000;
  // Work allowed in one render, past which it fails: one unit per statement run and per
  // expression evaluated, plus one per 16 bytes of each string and per 4 items of each list an
  // expression yields (strings are copied, so a loop over a large value costs its size). Bounds
  // templates whose loop bodies are long or copy large strings, which max_steps alone does not.
  uint64_t max_work = 10'000'000;
};

JinjaTemplate jinja_compile(const std::string& source, const std::string& name_for_errors);

// context must be a JSON object (or null); its keys become template variables.
std::string jinja_render(const JinjaTemplate& tmpl, const nlohmann::ordered_json& context,
                         const JinjaRenderOptions& options = {});

}  // namespace moe
