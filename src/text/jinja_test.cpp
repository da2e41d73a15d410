// Unit tests of the Jinja engine: every small template of tests/fixtures/chat/engine_cases.json
// (one or more per construct: output, whitespace control, if/for/set/macro/call/filter blocks,
// namespace, loop variables, filters, tests, string/dict methods, slicing, undefined) must
// render exactly as Python jinja2 rendered it with transformers' settings, or fail where it
// failed. Plus a few API-level checks. Bad templates are in jinja_errors_test.cpp.
#include "text/jinja.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"

namespace {

using ojson = nlohmann::ordered_json;

const ojson& engine_cases() {
  static const ojson g = [] {
    std::string path = std::string(MOE_FIXTURE_DIR) + "/chat/engine_cases.json";
    std::ifstream f(path);
    if (!f) throw std::runtime_error("missing " + path);
    return ojson::parse(f);
  }();
  return g;
}

std::tm fixed_now() {
  std::tm tm{};
  tm.tm_year = 2025 - 1900;
  tm.tm_mon = 2;
  tm.tm_mday = 15;
  tm.tm_hour = 9;
  tm.tm_min = 30;
  tm.tm_sec = 5;
  tm.tm_wday = 6;
  tm.tm_yday = 73;
  return tm;
}

std::string render(const std::string& src, const ojson& ctx = ojson::object()) {
  moe::JinjaRenderOptions opt;
  opt.now = fixed_now;
  return moe::jinja_render(moe::jinja_compile(src, "t"), ctx, opt);
}

TEST(JinjaEngine, MatchesPythonJinja2OnEveryCase) {
  const ojson& g = engine_cases();
  const ojson& ctx = g["context"];
  size_t n = 0, ok = 0;
  for (const auto& c : g["cases"]) {
    std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name + ": " + c["template"].get<std::string>());
    ++n;
    if (c.contains("error")) {
      try {
        std::string out = render(c["template"].get<std::string>(), ctx);
        ADD_FAILURE() << "expected an error like Python's " << c["python_error"]
                      << ", rendered: " << out;
      } catch (const moe::MoeError& e) {
        std::string msg = e.what();
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
        ++ok;
      }
      continue;
    }
    try {
      std::string out = render(c["template"].get<std::string>(), ctx);
      EXPECT_EQ(out, c["expected"].get<std::string>());
      ok += out == c["expected"].get<std::string>();
    } catch (const moe::MoeError& e) {
      ADD_FAILURE() << "unexpected error: " << e.what();
    }
  }
  std::printf("jinja engine cases: %zu of %zu match Python jinja2\n", ok, n);
  EXPECT_GE(n, 100u);
}

TEST(JinjaEngine, CompiledTemplateRendersManyContexts) {
  moe::JinjaTemplate t = moe::jinja_compile("{{ greeting | default('hi') }} {{ name }}", "t");
  EXPECT_EQ(moe::jinja_render(t, {{"name", "a"}}), "hi a");
  EXPECT_EQ(moe::jinja_render(t, {{"name", "b"}, {"greeting", "yo"}}), "yo b");
  EXPECT_EQ(moe::jinja_render(t, nullptr), "hi ");
}

TEST(JinjaEngine, ContextValuesKeepTypesAndOrder) {
  ojson ctx = ojson::parse(R"({"o": {"z": 1, "a": [true, null, 2.5, "s"]}, "big": 12345678901234,
                               "f": 21.0})");
  EXPECT_EQ(render("{{ o }}|{{ o | tojson }}|{{ big + 1 }}|{{ f }}|{{ f | tojson }}", ctx),
            "{'z': 1, 'a': [True, None, 2.5, 's']}|{\"z\": 1, \"a\": [true, null, 2.5, \"s\"]}|"
            "12345678901235|21.0|21.0");
}

TEST(JinjaEngine, ContextOverridesGlobals) {
  EXPECT_EQ(render("{{ range }}", {{"range", 3}}), "3");
}

TEST(JinjaEngine, StrftimeNowUsesInjectedClock) {
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }}"), "15 Mar 2025");
  std::string real = moe::jinja_render(moe::jinja_compile("{{ strftime_now('%Y') }}", "t"), {});
  EXPECT_EQ(real.size(), 4u);
}

TEST(JinjaEngine, GenerationTagRendersItsBody) {
  // transformers' AssistantTracker extension: {% generation %} marks assistant text.
  EXPECT_EQ(render("a{% generation %}b{{ 1 }}{% endgeneration %}c"), "ab1c");
  EXPECT_EQ(render("{% for m in ['x', 'y'] %}\n{% generation %}\n{{ m }}\n{% endgeneration %}"
                   "\n{% endfor %}"),
            "x\ny\n");
}

TEST(JinjaEngine, ContextMustBeAnObject) {
  moe::JinjaTemplate t = moe::jinja_compile("x", "t");
  EXPECT_THROW(moe::jinja_render(t, ojson::array()), moe::MoeError);
}

TEST(JinjaEngine, LargeConversationRendersQuickly) {
  ojson msgs = ojson::array();
  for (int i = 0; i < 2000; ++i)
    msgs.push_back(
        {{"role", i % 2 ? "assistant" : "user"}, {"content", "message " + std::to_string(i)}});
  std::string out = render(
      "{%- set ns = namespace(n=0) %}{%- for m in messages %}{%- set ns.n = ns.n + 1 %}"
      "<|{{ m.role }}|>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{%- endfor %}"
      "{{ ns.n }}",
      {{"messages", msgs}});
  EXPECT_EQ(out.substr(out.size() - 4), "2000");
}

}  // namespace
