// Fuzz target: the real chat templates the tests use (tokenizer_config.json files of Llama 2/3,
// Mixtral, Qwen3, DeepSeek-V3, gpt-oss, Gemma 3; tokenizers/llama2 has none) rendered against fuzzed messages and options.
// Input: one byte choosing the template, then a JSON object {"messages": [...],
// "add_generation_prompt": bool, and any other keys (tools, enable_thinking, ...) passed as extra
// variables}, or a JSON array of messages.
#include <memory>

#include "core/error.h"
#include "fuzz_util.h"
#include "text/chat_template.h"

namespace {

const char* kTemplates[] = {
    "tests/fixtures/chat/llama2.json",      "tests/fixtures/chat/llama3.json",
    "tests/fixtures/chat/llama3_2.json",    "tests/fixtures/chat/mixtral.json",
    "tests/fixtures/chat/qwen3.json",       "tests/fixtures/chat/deepseek_v3.json",
    "tests/fixtures/chat/gpt_oss.json",     "tests/fixtures/chat/gemma3.json",
    "tests/fixtures/tokenizers/qwen3/tokenizer_config.json",
    "tests/fixtures/tokenizers/deepseek_v3/tokenizer_config.json",
};
constexpr size_t kNumTemplates = sizeof(kTemplates) / sizeof(kTemplates[0]);

const std::vector<moe::ChatTemplate>& templates() {
  static const std::vector<moe::ChatTemplate> ts = [] {
    std::vector<moe::ChatTemplate> v;
    for (const char* rel : kTemplates) {
      v.push_back(moe::chat_template_load(moe::fuzz::source_path(rel)));
      v.back().options.now = [] {
        std::tm tm{};
        tm.tm_year = 125;
        tm.tm_mon = 2;
        tm.tm_mday = 15;
        return tm;
      };
    }
    return v;
  }();
  return ts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  if (size < 1) return 0;
  const ChatTemplate& tmpl = templates()[data[0] % kNumTemplates];
  using ojson = nlohmann::ordered_json;
  ojson j = ojson::parse(data + 1, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  ojson messages = ojson::array(), extra = ojson::object();
  bool add_generation_prompt = (data[0] & 0x80) != 0;
  if (j.is_array()) {
    messages = std::move(j);
  } else if (j.is_object()) {
    for (auto& [k, v] : j.items()) {
      if (k == "messages")
        messages = v;
      else if (k == "add_generation_prompt" && v.is_boolean())
        add_generation_prompt = v.get<bool>();
      else
        extra[k] = v;
    }
  } else {
    return 0;
  }
  try {
    chat_render(tmpl, messages, add_generation_prompt, extra);
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
