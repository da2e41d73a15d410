// Fuzz target: the Jinja engine (lexer, parser, interpreter, builtins) on a fuzzed template,
// rendered against fixed variables: a chat with every role, tool calls, tools, special tokens, and
// values of every type. Input: the template source.
#include "core/error.h"
#include "fuzz_util.h"
#include "text/jinja.h"

namespace {

const char* kContext = R"({
  "messages": [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi there \u00e9\u4e16 \ud83d\ude80"},
    {"role": "assistant", "content": "", "reasoning_content": "think",
     "tool_calls": [{"type": "function", "id": "c1",
                     "function": {"name": "get", "arguments": {"city": "Paris", "n": 2}}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "{\"t\": 21}"},
    {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image"}]},
    {"role": "assistant", "content": "done", "thinking": "hmm"}
  ],
  "tools": [{"type": "function", "function": {"name": "get", "description": "d",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}}],
  "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
  "d": {"b": 2, "a": 1}, "l": [3, 1, 2], "s": "Hello World", "n": null, "t": true, "f": 1.5,
  "i": 7, "neg": -3, "nested": {"a": {"b": [10, 20, {"c": "deep"}]}},
  "text": "line one\nline two\n\nline four"
})";

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json j = nlohmann::ordered_json::parse(kContext);
  return j;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  const std::string src(reinterpret_cast<const char*>(data), size);
  JinjaRenderOptions opt;
  opt.now = [] {
    std::tm tm{};
    tm.tm_year = 125;
    tm.tm_mon = 2;
    tm.tm_mday = 15;
    return tm;
  };
  try {
    JinjaTemplate t = jinja_compile(src, "fuzz_template");
    jinja_render(t, context(), opt);
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
