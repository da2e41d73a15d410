// Bad templates: syntax errors at compile time and runtime errors each give one MoeError line
// "<name>:<line>:<col>: <message>"; raise_exception gives "chat template raised: <msg>"; limits
// stop runaway templates (deep nesting, huge loops, huge output) without crashing or hanging.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "test_util.h"
#include "text/jinja.h"

namespace {

using ojson = nlohmann::ordered_json;

std::string compile_error(const std::string& src) {
  try {
    moe::jinja_compile(src, "tokenizer_config.json: chat_template");
  } catch (const moe::MoeError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  ADD_FAILURE() << "no error for: " << src;
  return "";
}

std::string render_error(const std::string& src, const ojson& ctx = ojson::object(),
                         const moe::JinjaRenderOptions& opt = {}) {
  moe::JinjaTemplate t = moe::jinja_compile(src, "t");
  try {
    moe::jinja_render(t, ctx, opt);
  } catch (const moe::MoeError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  ADD_FAILURE() << "no error for: " << src;
  return "";
}

const std::string kName = "tokenizer_config.json: chat_template";

TEST(JinjaErrors, UnclosedBlocks) {
  EXPECT_EQ(compile_error("a\n{% if x %}\n  b\n"),
            kName + ":3:4: expected 'endif' to close the 'if' at 2:1, got end of template");
  EXPECT_EQ(compile_error("{% for m in messages %}{{ m }}"),
            kName + ":1:31: expected 'endfor' to close the 'for' at 1:1, got end of template");
  EXPECT_EQ(compile_error("{% macro f() %}x"),
            kName + ":1:17: expected 'endmacro' to close the 'macro' at 1:1, got end of template");
  EXPECT_EQ(compile_error("{% set x %}abc"),
            kName + ":1:15: expected 'endset' to close the 'set' at 1:1, got end of template");
  EXPECT_EQ(compile_error("{% if a %}{% for x in y %}{% endif %}"),
            kName + ":1:30: expected 'endfor' to close 'for', got 'endif'");
  EXPECT_EQ(compile_error("x{% endif %}"), kName + ":1:5: unexpected 'endif' outside of any block");
  EXPECT_EQ(compile_error("{% raw %}abc"), kName + ":1:1: unclosed raw block: expected 'endraw'");
}

TEST(JinjaErrors, UnknownFiltersTestsAndTags) {
  EXPECT_EQ(compile_error("{{ x }}\n  {{ x | nosuch }}"), kName + ":2:8: no filter named 'nosuch'");
  EXPECT_EQ(compile_error("{% if x is nosuch %}{% endif %}"),
            kName + ":1:9: no test named 'nosuch'");
  EXPECT_EQ(compile_error("{% include 'other.jinja' %}"), kName + ":1:4: unknown tag 'include'");
  EXPECT_EQ(compile_error("{% extends 'base' %}"), kName + ":1:4: unknown tag 'extends'");
  EXPECT_EQ(compile_error("{% for x in y recursive %}{% endfor %}"),
            kName + ":1:15: recursive for loops are not supported");
  EXPECT_EQ(compile_error("{% break %}"), kName + ":1:4: 'break' outside of a loop");
}

TEST(JinjaErrors, BadTokens) {
  EXPECT_EQ(compile_error("{{ a $ b }}"), kName + ":1:6: unexpected character '$'");
  EXPECT_EQ(compile_error("{{ 'abc }}"), kName + ":1:4: unterminated string literal");
  EXPECT_EQ(compile_error("ab\n{{ x "), kName + ":2:1: unclosed '{{': expected '}}'");
  EXPECT_EQ(compile_error("{# never closed"), kName + ":1:1: unclosed comment: expected '#}'");
  EXPECT_EQ(compile_error("{{ x %}"), kName + ":1:6: unexpected '%}' inside '{{'");
  EXPECT_EQ(compile_error("{{ (a }}"), kName + ":1:8: unexpected '}'");
  EXPECT_EQ(compile_error("{{ a ) }}"), kName + ":1:6: unexpected ')'");
  EXPECT_EQ(compile_error("{{ }}"), kName + ":1:4: unexpected '}}' in expression");
  EXPECT_EQ(compile_error("{% if %}{% endif %}"), kName + ":1:7: unexpected '%}' in expression");
  EXPECT_EQ(compile_error("{% for x y %}"), kName + ":1:10: expected 'in' in for loop, got 'y'");
  EXPECT_EQ(compile_error("{% set = 1 %}"), kName + ":1:8: expected variable name, got '='");
  EXPECT_EQ(compile_error("{{ 'a\\x4' }}"), kName + ":1:4: truncated \\x/\\u escape in string");
  EXPECT_EQ(compile_error("{{ 'a\\xZZ' }}"), kName + ":1:4: bad \\x/\\u escape in string");
  EXPECT_EQ(compile_error("{{ f(a=1, 2) }}"),
            kName + ":1:11: positional argument after keyword argument");
  EXPECT_EQ(compile_error("{{ x.}}"), kName + ":1:6: expected attribute name after '.', got '}}'");
}

TEST(JinjaErrors, DeepNestingIsRejected) {
  std::string parens = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(compile_error("{{ " + parens + " }}").find("expression nested too deeply"),
            std::string::npos);
  std::string lists = std::string(5000, '[') + std::string(5000, ']');
  EXPECT_NE(compile_error("{{ " + lists + " }}").find("expression nested too deeply"),
            std::string::npos);
  std::string nots;
  for (int i = 0; i < 5000; ++i) nots += "not ";
  EXPECT_NE(compile_error("{{ " + nots + "x }}").find("nested too deeply"), std::string::npos);
  std::string minus(5000, '-');
  EXPECT_NE(compile_error("{{ " + minus + "1 }}").find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if x %}";
  EXPECT_NE(compile_error(ifs).find("blocks nested too deeply"), std::string::npos);
  // Within the limits everything still works.
  std::string ok = std::string(50, '(') + "1" + std::string(50, ')');
  EXPECT_EQ(moe::jinja_render(moe::jinja_compile("{{ " + ok + " }}", "t"), {}), "1");
}

TEST(JinjaErrors, RuntimeErrorsNameTheLine) {
  EXPECT_EQ(render_error("ok\n  {{ 'a' + 1 }}"),
            "t:2:10: can only concatenate str (not \"int\") to str");
  EXPECT_EQ(render_error("{{ messages[0].content.x }}", {{"messages", ojson::array()}}),
            "t:1:15: 'list object' has no element 0");
  EXPECT_EQ(render_error("{{ nope.attr }}"), "t:1:8: 'nope' is undefined");
  EXPECT_EQ(render_error("{{ nope() }}"), "t:1:8: 'nope' is undefined");
  EXPECT_EQ(render_error("{{ 1 // 0 }}"), "t:1:6: integer division or modulo by zero");
  EXPECT_EQ(render_error("{% for a, b in [1] %}{% endfor %}"),
            "t:1:1: cannot unpack non-iterable int object");
  EXPECT_EQ(render_error("{{ [].append(1) }}"),
            "t:1:13: access to attribute 'append' of 'list' object is unsafe");
  EXPECT_EQ(render_error("{{ 5 | length }}"), "t:1:6: object of type 'int' has no len()");
}

TEST(JinjaErrors, RaiseException) {
  EXPECT_EQ(render_error("a{{ raise_exception('Only user and assistant roles are supported!') }}"),
            "chat template raised: Only user and assistant roles are supported!");
  EXPECT_EQ(render_error("{% macro m() %}{{ raise_exception('in macro ' ~ 1) }}{% endmacro %}"
                         "{% for x in [1] %}{{ m() }}{% endfor %}"),
            "chat template raised: in macro 1");
}

TEST(JinjaErrors, RunawayTemplatesStop) {
  // The bounds of issue 16, each within a second: a huge range, unbounded macro recursion, a
  // long loop body, a loop that copies a large string.
  auto names_template = [](const std::string& msg, const std::string& what) {
    EXPECT_EQ(msg.rfind("t:1:", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  };
  double secs = moe_test::thread_cpu_seconds([&] {
    names_template(render_error("{% for i in range(10**9) %}{{ i }}{% endfor %}"),
                   ": range too big, the limit is 100000 items");
  });
  EXPECT_LT(secs, moe_test::kOneSecondBound);
  secs = moe_test::thread_cpu_seconds([&] {
    names_template(render_error("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}"),
                   ": macro calls nested too deeply");
  });
  EXPECT_LT(secs, moe_test::kOneSecondBound);
  std::string body;
  for (int k = 0; k < 40; ++k) body += "{{ i + j }}";
  secs = moe_test::thread_cpu_seconds([&] {
    EXPECT_NE(render_error("{% for i in range(1000) %}{% for j in range(1000) %}" + body +
                           "{% endfor %}{% endfor %}")
                  .find("template exceeded the limit of 10000000 units of work"),
              std::string::npos);
  });
  EXPECT_LT(secs, moe_test::kOneSecondBound);
  secs = moe_test::thread_cpu_seconds([] {
    EXPECT_NE(render_error("{% set s = 'x' * 10000000 %}{% for i in range(100000) %}"
                           "{% set t = s | upper %}{% endfor %}")
                  .find("units of work"),
              std::string::npos);
  });
  EXPECT_LT(secs, moe_test::kOneSecondBound);
  moe::JinjaRenderOptions small;
  small.max_steps = 20'000;
  EXPECT_EQ(render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                         "{% endfor %}",
                         {}, small),
            "t:1:29: template exceeded the limit of 20000 loop iterations and calls");
  EXPECT_NE(render_error("{% macro f(n) %}{% for i in range(n) %}{{ f(0) }}{% endfor %}"
                         "{% endmacro %}{{ f(100000) }}",
                         {}, small)
                .find("limit of 20000 loop iterations"),
            std::string::npos);
  EXPECT_NE(render_error("{{ range(10000000) | length }}").find("range too big"),
            std::string::npos);
  EXPECT_NE(render_error("{{ 'x' * 1000000000 }}").find("too long"), std::string::npos);
  EXPECT_NE(render_error("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}"
                         "{% endfor %}")
                .find("output exceeds"),
            std::string::npos);
  moe::JinjaRenderOptions no_work_limit;  // the string limit alone (the work limit comes first)
  no_work_limit.max_work = UINT64_MAX;
  EXPECT_NE(render_error("{% set s = 'x' * 10000000 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s }}", {},
                         no_work_limit)
                .find("string too long"),
            std::string::npos);
  EXPECT_NE(render_error("{% set s = 'x' * 10000000 %}{{ s + s + s + s + s + s + s }}", {},
                         no_work_limit)
                .find("string too long"),
            std::string::npos);
  EXPECT_NE(render_error("{% set s = 'x' * 10000000 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s }}")
                .find("units of work"),
            std::string::npos);
  EXPECT_EQ(render_error("{% set ns = namespace(x=none) %}{% for i in range(100000) %}"
                         "{% set ns.x = [ns.x] %}{% endfor %}"),
            "t:1:78: value nested too deeply (over 256 levels)");
  ojson deep = 1;
  for (int i = 0; i < 300; ++i) deep = ojson::array({deep});
  EXPECT_EQ(render_error("{{ x }}", {{"x", deep}}),
            "t: render context: value nested too deeply (over 256 levels)");
  EXPECT_NE(render_error("{% set l = [1] * 600000 %}{{ (l + l) | length }}").find("list too long"),
            std::string::npos);
}

}  // namespace

namespace {

// range() near the int64 limits: the values Python gives, no signed overflow past stop (found by
// fuzzing under UBSan; regression input fuzz/corpus/jinja_template/regressions/range_step_overflow).
TEST(JinjaErrors, RangeNearInt64Limits) {
  auto render = [](const std::string& src) {
    return moe::jinja_render(moe::jinja_compile(src, "t"), nlohmann::ordered_json::object());
  };
  EXPECT_EQ(render("{{ range(-9223372036854775807, 9223372036854775807, 4611686018427387904) "
                   "| list }}"),
            "[-9223372036854775807, -4611686018427387903, 1, 4611686018427387905]");
  EXPECT_EQ(render("{{ range(9223372036854775807, -9223372036854775807, -4611686018427387904) "
                   "| list }}"),
            "[9223372036854775807, 4611686018427387903, -1, -4611686018427387905]");
  EXPECT_EQ(render("{{ range(5, 0, -2) | list }}{{ range(0, 7, 3) | list }}{{ range(3, 3) | list }}"),
            "[5, 3, 1][0, 3, 6][]");
}

}  // namespace
