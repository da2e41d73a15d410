// Golden tests of chat templates against @huggingface/jinja (cross-checked with Python jinja2):
// every case of tests/fixtures/chat/goldens.json rendered through chat_render from the family's
// tokenizer_config-shaped fixture, compared byte for byte (or the expected raise_exception
// message). Plus the tokenizer_config.json loader: string and list templates, special tokens as
// strings or {content} objects, tool_use selection, the strftime_now clock, bad configs.
#include "text/chat_template.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "core/error.h"

namespace {

using ojson = nlohmann::ordered_json;

std::string chat_dir() {
  return std::string(MOE_FIXTURE_DIR) + "/chat";
}

const ojson& goldens() {
  static const ojson g = [] {
    std::ifstream f(chat_dir() + "/goldens.json");
    if (!f) throw std::runtime_error("missing " + chat_dir() + "/goldens.json");
    return ojson::parse(f);
  }();
  return g;
}

// "2025-03-15T09:30:05" -> std::tm.
std::tm parse_now(const std::string& s) {
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &se) != 6)
    throw std::runtime_error("bad now: " + s);
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  std::tm copy = tm;
  timegm(&copy);  // fills tm_wday / tm_yday
  tm.tm_wday = copy.tm_wday;
  tm.tm_yday = copy.tm_yday;
  return tm;
}

std::string render_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const moe::MoeError& e) {
    return e.what();
  }
  return "";
}

TEST(ChatGoldens, EveryCaseMatches) {
  const ojson& g = goldens();
  std::tm now = parse_now(g["now"].get<std::string>());
  std::map<std::string, moe::ChatTemplate> templates;
  size_t total = 0, passed = 0;
  for (const auto& c : g["cases"]) {
    std::string family = c["family"].get<std::string>();
    std::string label = family + "/" + c["name"].get<std::string>();
    SCOPED_TRACE(label);
    if (!templates.count(family)) {
      moe::ChatTemplate t = moe::chat_template_load(chat_dir() + "/" + family + ".json");
      t.options.now = [now] { return now; };
      templates.emplace(family, std::move(t));
    }
    const moe::ChatTemplate& t = templates.at(family);
    ojson extra = c.contains("extra") ? c["extra"] : ojson::object();
    ++total;
    if (c.contains("expected_error")) {
      std::string want = "chat template raised: " + c["expected_error"].get<std::string>();
      std::string got = render_error([&] {
        moe::chat_render(t, c["messages"], c["add_generation_prompt"].get<bool>(), extra);
      });
      EXPECT_EQ(got, want);
      passed += got == want;
      continue;
    }
    std::string got;
    try {
      got = moe::chat_render(t, c["messages"], c["add_generation_prompt"].get<bool>(), extra);
    } catch (const moe::MoeError& e) {
      ADD_FAILURE() << "render failed: " << e.what();
      continue;
    }
    std::string want = c["expected"].get<std::string>();
    EXPECT_EQ(got, want);
    passed += got == want;
  }
  std::printf("chat goldens: %zu of %zu cases match\n", passed, total);
  EXPECT_GE(total, 80u);
}

TEST(ChatGoldens, CoversEveryFamily) {
  std::map<std::string, int> per_family;
  for (const auto& c : goldens()["cases"]) ++per_family[c["family"].get<std::string>()];
  for (const char* f :
       {"qwen3", "deepseek_v3", "llama2", "mixtral", "gpt_oss", "llama3", "llama3_2", "gemma3"}) {
    EXPECT_GE(per_family[f], 5) << f;
    EXPECT_TRUE(std::filesystem::exists(chat_dir() + "/" + f + ".json")) << f;
  }
}

// ---- loader ------------------------------------------------------------------------------------

TEST(ChatTemplate, StringTemplateAndTokenObjects) {
  ojson cfg = {{"chat_template",
                "{{ bos_token }}{% for m in messages %}{{ m.content }}"
                "{{ eos_token }}{% endfor %}{{ unk_token }}"},
               {"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}},
               {"eos_token", "</s>"},
               {"pad_token", nullptr}};
  moe::ChatTemplate t = moe::chat_template_from_config(cfg, "cfg.json");
  ASSERT_NE(t.token("bos_token"), nullptr);
  EXPECT_EQ(*t.token("bos_token"), "<s>");
  EXPECT_EQ(t.token("pad_token"), nullptr);
  ojson msgs = ojson::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(moe::chat_render(t, msgs, false), "<s>hi</s>");
}

TEST(ChatTemplate, ListTemplatesPickDefaultOrToolUse) {
  ojson cfg = {
      {"chat_template", ojson::array({{{"name", "default"}, {"template", "D{{ tools is none }}"}},
                                      {{"name", "tool_use"}, {"template", "T{{ tools | length }}"}},
                                      {{"name", "rag"}, {"template", "R"}}})}};
  moe::ChatTemplate t = moe::chat_template_from_config(cfg, "cfg.json");
  EXPECT_EQ(t.templates.size(), 3u);
  EXPECT_EQ(moe::chat_render(t, ojson::array(), true), "DTrue");
  EXPECT_EQ(moe::chat_render(t, ojson::array(), true, {{"tools", ojson::array({1, 2})}}), "T2");
  EXPECT_EQ(moe::chat_render(t, ojson::array(), true, {{"tools", nullptr}}), "DTrue");
}

TEST(ChatTemplate, PassesContextLikeApplyChatTemplate) {
  ojson cfg = {{"chat_template",
                "{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ enable_thinking }}|"
                "{{ messages | length }}|{{ eos_token }}"},
               {"eos_token", "E"}};
  moe::ChatTemplate t = moe::chat_template_from_config(cfg, "cfg.json");
  EXPECT_EQ(moe::chat_render(t, ojson::array({ojson::object()}), true,
                             {{"enable_thinking", false}, {"eos_token", "X"}}),
            "True|None|None|False|1|X");
}

TEST(ChatTemplate, StrftimeNowClockIsInjectable) {
  ojson cfg = {{"chat_template", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}"}};
  moe::ChatTemplate t = moe::chat_template_from_config(cfg, "cfg.json");
  std::tm tm = parse_now("2024-07-26T12:00:00");
  t.options.now = [tm] { return tm; };
  EXPECT_EQ(moe::chat_render(t, ojson::array(), false), "26 Jul 2024|2024-07-26");
  t.options.now = nullptr;  // the real clock: just check the shape
  EXPECT_EQ(moe::chat_render(t, ojson::array(), false).size(), 22u);
}

TEST(ChatTemplate, LoadsFixtureFileAndReportsBadConfigs) {
  moe::ChatTemplate t = moe::chat_template_load(chat_dir() + "/deepseek_v3.json");
  ASSERT_NE(t.token("bos_token"), nullptr);
  EXPECT_EQ(*t.token("bos_token"), "<｜begin▁of▁sentence｜>");

  std::string err = render_error([] { moe::chat_template_load("/nonexistent/tc.json"); });
  EXPECT_NE(err.find("/nonexistent/tc.json: cannot open"), std::string::npos) << err;
  err = render_error([] { moe::chat_template_from_config({{"eos_token", "x"}}, "a.json"); });
  EXPECT_EQ(err, "a.json: chat_template: missing (this tokenizer has no chat template)");
  err = render_error([] { moe::chat_template_from_config({{"chat_template", 5}}, "a.json"); });
  EXPECT_EQ(err, "a.json: chat_template: expected a string or a list of {name, template}");
  err = render_error([] {
    moe::chat_template_from_config({{"chat_template", "{% if x %}\n  {{ y }}\n"}}, "a.json");
  });
  EXPECT_EQ(err,
            "a.json: chat_template:2:10: expected 'endif' to close the 'if' at 1:1, got end of "
            "template");
  err = render_error([] {
    moe::ChatTemplate t = moe::chat_template_from_config(
        {{"chat_template", ojson::array({{{"name", "rag"}, {"template", "x"}}})}}, "a.json");
    moe::chat_render(t, ojson::array(), false);
  });
  EXPECT_EQ(err, "chat template: several templates (rag) and none is named 'default'");
}

}  // namespace
