// The HTML report: well-formed markup, data in every plot, escaping, no external resources, the
// atomic write, and metrics.jsonl parsing (good, partial, bad and resumed files).
#include "analysis/report_html.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/report_svg.h"
#include "core/error.h"
#include "test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// Checks that every element is closed in order (void elements and "/>" aside; <style> content is
// raw text). Returns "" or a description of the first problem.
std::string check_balanced(const std::string& h) {
  static const std::vector<std::string> kVoid = {"meta", "br", "img", "hr", "input", "link", "wbr"};
  std::vector<std::string> stack;
  size_t p = 0;
  while ((p = h.find('<', p)) != std::string::npos) {
    if (h.compare(p, 4, "<!--") == 0) {
      p = h.find("-->", p);
      if (p == std::string::npos) return "unclosed comment";
      continue;
    }
    const size_t e = h.find('>', p);
    if (e == std::string::npos) return "unterminated tag at " + std::to_string(p);
    std::string tag = h.substr(p + 1, e - p - 1);
    p = e + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '!') continue;  // doctype
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name)
        return "</" + name + "> closes <" + (stack.empty() ? "nothing" : stack.back()) + ">";
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \n\t/"));
    if (tag.back() == '/' || std::find(kVoid.begin(), kVoid.end(), name) != kVoid.end()) continue;
    if (name == "style") {
      const size_t c = h.find("</style>", p);
      if (c == std::string::npos) return "unclosed style";
      p = c + 8;
      continue;
    }
    stack.push_back(name);
  }
  return stack.empty() ? "" : "<" + stack.back() + "> never closed";
}

// The <svg>...</svg> blocks of a page.
std::vector<std::string> svgs(const std::string& h) {
  std::vector<std::string> out;
  for (size_t p = h.find("<svg"); p != std::string::npos; p = h.find("<svg", p + 1)) {
    const size_t e = h.find("</svg>", p);
    if (e == std::string::npos) break;
    out.push_back(h.substr(p, e - p));
  }
  return out;
}

ReportData small_report() {
  ReportData d;
  d.title = "Test report";
  d.facts = {{"model", "tiny"}, {"experts", "4"}};
  for (int s = 1; s <= 30; ++s) {
    d.loss.train_step.push_back(s);
    d.loss.train_loss.push_back(5.0 * std::exp(-s / 10.0) + 2.0);
    if (s % 10 == 0) {
      d.loss.val_step.push_back(s);
      d.loss.val_loss.push_back(5.0 * std::exp(-s / 10.0) + 2.2);
    }
  }
  for (int layer : {0, 1}) {
    LoadHeatmap h;
    h.layer = layer;
    h.n_experts = 4;
    for (int s = 1; s <= 30; ++s) {
      h.steps.push_back(s);
      for (int e = 0; e < 4; ++e) h.load.push_back(e == layer ? 40 + s : 2 + (s + e) % 3);
      h.dropped.push_back(0.0);
    }
    d.heat.push_back(h);
  }
  d.summary = summary_from_heat(d.heat, 5);
  Contingency c = contingency_make(3, 4);
  c.count = {40, 5, 5, 5, 5, 40, 5, 5, 10, 10, 10, 10};
  d.pos_lift.push_back(lift_matrix(specialisation(c), {"nn", "vb", "at"}, "Layer 0 · POS tag"));
  d.genre_lift.push_back(
      lift_matrix(specialisation(c), {"news", "fiction", "lore"}, "Layer 0 · genre"));
  d.sample.tokens = {"The", " cat", " sat", "."};
  d.sample.layers = {0, 1};
  d.sample.top1 = {{0, 1, 2, 3}, {3, 3, 1, -1}};
  return d;
}

TEST(ReportHtml, WellFormedWithDataInEveryPlot) {
  const ReportData d = small_report();
  const std::string h = report_html(d);
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(check_balanced(h), "");
  for (const char* t : {"html", "head", "body", "main", "section", "svg", "table", "tr", "g"})
    EXPECT_EQ(count(h, std::string("<") + t + ">") + count(h, std::string("<") + t + " "),
              count(h, std::string("</") + t + ">"))
        << t;
  const std::vector<std::string> plots = svgs(h);
  // Loss, max/mean, 2 heat maps, 2 lift matrices, 3 legend bars, 2 per-layer load histograms.
  ASSERT_EQ(plots.size(), 11u);
  for (const std::string& s : plots)
    EXPECT_GT(count(s, "<rect") + count(s, "<path") + count(s, "<circle"), 0) << s.substr(0, 200);
  int lines = 0, heat = 0, lift = 0, bars = 0;
  for (const std::string& s : plots) {
    if (s.find("class=\"bars\"") != std::string::npos) {
      EXPECT_EQ(count(s, "<rect"), 4);  // one bar per expert
      ++bars;
    }
    if (s.find("class=\"chart\"") != std::string::npos) {
      EXPECT_GT(count(s, "<path class=\"line\""), 0);
      ++lines;
    }
    if (s.find("class=\"chart heat\"") != std::string::npos) {
      EXPECT_EQ(count(s, "<title>"), 4 * 30);  // 4 experts x 30 steps, one cell each
      ++heat;
    }
    if (s.find("class=\"chart lift\"") != std::string::npos) {
      EXPECT_GE(count(s, "<rect"), 3 * 4);
      ++lift;
    }
  }
  EXPECT_EQ(lines, 2);
  EXPECT_EQ(heat, 2);
  EXPECT_EQ(lift, 2);
  EXPECT_EQ(bars, 2);
  EXPECT_EQ(count(h, "<circle"), 3 + 1);  // 3 validation markers + the legend's
  EXPECT_EQ(count(h, "class=\"tok\""), 8);
  EXPECT_EQ(count(h, "<tr>"), 1 + 2);               // header + 2 layers
  EXPECT_NE(h.find("E0 gets"), std::string::npos);  // the hot expert of layer 0 is flagged
}

TEST(ReportHtml, SelfContained) {
  const std::string h = report_html(small_report());
  EXPECT_EQ(count(h, "http://") + count(h, "https://"), count(h, "http://www.w3.org/2000/svg"));
  EXPECT_EQ(count(h, "<script"), 0);
  EXPECT_EQ(count(h, "@import"), 0);
  EXPECT_EQ(count(h, "url("), 0);
  EXPECT_EQ(count(h, "<link"), 0);
  EXPECT_NE(h.find("Content-Security-Policy"), std::string::npos);
}

TEST(ReportHtml, EscapesEveryText) {
  ReportData d = small_report();
  d.title = "<script>alert(\"x\")</script> R&D 'q'";
  d.facts.push_back({"<b>key</b>", "a < b & c > d"});
  d.notes.push_back("bad line: {\"x\": \"</div>\"}");
  d.pos_lift[0].labels[0] = "<nn>&\"";
  d.pos_lift[0].title = "Layer <0>";
  d.sample.tokens[1] = "</span><i>\"&'";
  d.sample.tokens[2] = std::string("bad\xff\xfe utf8 \x01 ctl\nnl");
  const std::string h = report_html(d);
  EXPECT_EQ(check_balanced(h), "");
  EXPECT_EQ(h.find("<script"), std::string::npos);
  EXPECT_EQ(h.find("<b>key"), std::string::npos);
  EXPECT_EQ(h.find("<nn>"), std::string::npos);
  EXPECT_EQ(h.find("<0>"), std::string::npos);
  EXPECT_EQ(h.find("<i>"), std::string::npos);
  EXPECT_NE(h.find("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; R&amp;D &#39;q&#39;"),
            std::string::npos);
  EXPECT_NE(h.find("&lt;nn&gt;&amp;&quot;"), std::string::npos);  // in SVG text and titles
  EXPECT_NE(h.find("a &lt; b &amp; c &gt; d"), std::string::npos);
  EXPECT_NE(h.find("&lt;/span&gt;&lt;i&gt;&quot;&amp;&#39;"), std::string::npos);
  EXPECT_EQ(h.find('\xff'), std::string::npos);
  EXPECT_EQ(h.find('\x01'), std::string::npos);
  EXPECT_NE(h.find("bad\xEF\xBF\xBD\xEF\xBF\xBD utf8 \xEF\xBF\xBD ctl\xE2\x86\xB5nl"),
            std::string::npos);
}

TEST(ReportHtml, HtmlEscape) {
  EXPECT_EQ(html_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
  EXPECT_EQ(html_escape("tab\tnl\n"), "tab\tnl\n");
  EXPECT_EQ(html_escape("é 😀 ×"), "é 😀 ×");                        // valid UTF-8 kept
  EXPECT_EQ(html_escape("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(html_escape("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(html_escape("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");                // truncated
  EXPECT_EQ(html_escape(std::string("\0\x1b", 2)), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(html_escape(""), "");
}

TEST(ReportHtml, NumberFormattingAndScales) {
  using namespace report;
  EXPECT_EQ(fmt_num(532), "532");
  EXPECT_EQ(fmt_num(12345), "12,345");
  EXPECT_EQ(fmt_num(-1234567), "-1,234,567");
  EXPECT_EQ(fmt_num(3.14159), "3.14");
  EXPECT_EQ(fmt_num(0.0123456), "0.0123");
  EXPECT_EQ(fmt_num(2.5e-5), "2.5e-05");
  EXPECT_EQ(fmt_num(NAN), "n/a");
  EXPECT_EQ(fmt_pct(0.05), "5.0%");
  EXPECT_EQ(fmt_pct(0.25), "25%");
  EXPECT_EQ(fmt_pct(0.0012), "0.12%");
  EXPECT_EQ(tick_label(12000, 2000), "12k");
  EXPECT_EQ(tick_label(0.5, 0.5), "0.5");
  EXPECT_EQ(tick_label(3, 0.5), "3.0");
  EXPECT_EQ(nice_ticks(0, 10, 5), std::vector<double>({0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(nice_ticks(1, 60, 9),
            std::vector<double>({5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60}));
  EXPECT_EQ(px(-0.04), "0");
  EXPECT_EQ(px(12.0), "12");
  EXPECT_EQ(css(diverging(0)), "#f7f7f7");
  EXPECT_EQ(css(diverging(-1)), "#2166ac");
  EXPECT_EQ(css(diverging(5)), "#b2182b");  // clamped
  EXPECT_EQ(css(expert_colour(0, 8)), "#4e79a7");
  EXPECT_NE(css(expert_colour(21, 64)), css(expert_colour(22, 64)));
}

TEST(ReportHtml, EmptyAndDegenerateData) {
  ReportData d;
  std::string h = report_html(d);
  EXPECT_EQ(check_balanced(h), "");
  EXPECT_NE(h.find("No loss recorded."), std::string::npos);
  EXPECT_NE(h.find("No sample text."), std::string::npos);
  // One step, one expert, a NaN loss, a lift matrix with undefined cells, zero-token rows.
  d.loss.train_step = {1, 2};
  d.loss.train_loss = {NAN, 3.0};
  LoadHeatmap hm;
  hm.layer = 0;
  hm.n_experts = 1;
  hm.steps = {1, 2};
  hm.load = {0, 5};
  d.heat.push_back(hm);
  d.summary = summary_from_heat(d.heat, 1);
  LiftMatrix m;
  m.title = "empty";
  m.labels = {"x"};
  m.n_experts = 1;
  m.lift = {NAN};
  d.pos_lift.push_back(m);
  h = report_html(d);
  EXPECT_EQ(check_balanced(h), "");
  for (const char* bad : {"=\"nan", "=\"-nan", "=\"inf", "=\"-inf", ">nan<", ">inf<"})
    EXPECT_EQ(h.find(bad), std::string::npos) << bad;
  d.heat[0].load.pop_back();
  EXPECT_THROW(report_html(d), MoeError);
  d.heat.clear();
  d.sample.tokens = {"a"};
  d.sample.layers = {0};
  d.sample.top1 = {{0, 1}};
  EXPECT_THROW(report_html(d), MoeError);
}

TEST(ReportHtml, AtomicWriteLeavesNoTempFile) {
  const std::string dir = moe_test::make_temp_dir("report");
  const std::string path = dir + "/report.html";
  const ReportData d = small_report();
  report_write(path, d);
  report_write(path, d);  // replaces
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), report_html(d));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>({"report.html"}));
  EXPECT_THROW(report_write(dir + "/missing/report.html", d), MoeError);
  names.clear();
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>({"report.html"}));
  fs::remove_all(dir);
}

TEST(ReportSummary, AlertsAndLiftMatrix) {
  // Loads 10, 0, 1, 1: mean 3, E0 > 9 is hot, E1 is idle; 5% dropped.
  const LayerSummary s = layer_summary(2, {10, 0, 1, 1}, 0.05);
  EXPECT_EQ(s.layer, 2);
  ASSERT_EQ(s.alerts.size(), 3u);
  EXPECT_EQ(s.alerts[0], "E0 gets 3.33× the mean load");
  EXPECT_EQ(s.alerts[1], "E1 received no tokens");
  EXPECT_EQ(s.alerts[2], "5.0% of assignments dropped");
  EXPECT_TRUE(layer_summary(0, {1, 1}, 0.0).alerts.empty());
  // Rows with >= min_count tokens, most frequent first, capped.
  Contingency c = contingency_make(4, 2);
  c.count = {5, 5, 30, 10, 1, 1, 20, 20};
  const Specialisation sp = specialisation(c);
  LiftMatrix m = lift_matrix(sp, {"a", "b", "c", "d"}, "t", 5.0, 10);
  EXPECT_EQ(m.labels, std::vector<std::string>({"b", "d", "a"}));
  EXPECT_EQ(m.label_count, std::vector<double>({40, 40, 10}));
  ASSERT_EQ(m.lift.size(), 6u);
  EXPECT_DOUBLE_EQ(m.lift[0], sp.lift[2]);  // b, E0
  m = lift_matrix(sp, {"a", "b", "c", "d"}, "t", 0.0, 1);
  EXPECT_EQ(m.labels, std::vector<std::string>({"b"}));
  EXPECT_THROW(lift_matrix(sp, {"a"}, "t"), MoeError);
}

// ---- metrics.jsonl -----------------------------------------------------------------------------

std::string write_tmp(const std::string& dir, const std::string& text) {
  const std::string p = dir + "/metrics.jsonl";
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

TEST(ReportMetrics, ParsesTrainerLines) {
  const std::string dir = moe_test::make_temp_dir("metrics");
  const std::string p = write_tmp(
      dir,
      R"({"step":1,"loss":5.0,"ce":4.9,"layers":[{"layer":1,"load":[6,2],"cv":0.5,"dropped":0.0},)"
      R"({"layer":3,"load":[4,4]}]})"
      "\n"
      R"({"step":2,"loss":4.0,"layers":[{"layer":1,"load":[5,3]},)"
      R"({"layer":3,"load":[2,6],"dropped":0.25}],"val_loss":4.5})"
      "\n\n"
      R"({"step":3,"layers":[{"layer":1,"load":[4,4],"bias":[0.1,-0.1]}]})"
      "\n"
      R"({"step":4,"loss":null,"lr":0.001})"
      "\n"
      R"({"final":true,"step":4,"val_loss":3.9})"
      "\n");
  ReportData d;
  const std::vector<std::string> w = report_load_metrics(&d, p);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(d.loss.train_step, std::vector<double>({1, 2}));
  EXPECT_EQ(d.loss.train_loss, std::vector<double>({5.0, 4.0}));
  EXPECT_EQ(d.loss.val_step, std::vector<double>({2, 4}));
  EXPECT_EQ(d.loss.val_loss, std::vector<double>({4.5, 3.9}));
  ASSERT_EQ(d.heat.size(), 2u);
  EXPECT_EQ(d.heat[0].layer, 1);
  EXPECT_EQ(d.heat[0].n_experts, 2);
  EXPECT_EQ(d.heat[0].steps, std::vector<double>({1, 2, 3}));
  EXPECT_EQ(d.heat[0].load, std::vector<double>({6, 2, 5, 3, 4, 4}));
  EXPECT_EQ(d.heat[1].layer, 3);
  EXPECT_EQ(d.heat[1].steps, std::vector<double>({1, 2}));
  ASSERT_EQ(d.heat[1].dropped.size(), 2u);
  EXPECT_TRUE(std::isnan(d.heat[1].dropped[0]));
  EXPECT_EQ(d.heat[1].dropped[1], 0.25);
  // The parsed data renders.
  EXPECT_EQ(check_balanced(report_html(d)), "");
  fs::remove_all(dir);
}

TEST(ReportMetrics, ParsesRealTrainerOutput) {
  // Lines 1-4, 50, 60 and the final line of `moe train ... --experts 8 --top-k 2 --batch 8
  // --seq 32 --layers 2`: every step routes 8*32 tokens x 2 choices = 512 assignments per layer.
  ReportData d;
  const std::string p = std::string(MOE_FIXTURE_DIR) + "/report/metrics_tiny.jsonl";
  EXPECT_TRUE(report_load_metrics(&d, p).empty());
  EXPECT_EQ(d.loss.train_step, std::vector<double>({1, 2, 3, 4, 50, 60}));
  EXPECT_NEAR(d.loss.train_loss[0], 5.734337133048396, 1e-12);
  EXPECT_EQ(d.loss.val_step, std::vector<double>({50, 60}));
  EXPECT_NEAR(d.loss.val_loss[1], 2.8306388900875237, 1e-12);
  ASSERT_EQ(d.heat.size(), 2u);
  for (const LoadHeatmap& h : d.heat) {
    EXPECT_EQ(h.n_experts, 8);
    ASSERT_EQ(h.steps.size(), 6u);
    for (size_t r = 0; r < h.steps.size(); ++r) {
      double sum = 0;
      for (int e = 0; e < 8; ++e) sum += h.load[r * 8 + e];
      EXPECT_EQ(sum, 512.0);
      EXPECT_EQ(h.dropped[r], 0.0);
    }
  }
  EXPECT_EQ(d.heat[0].load[0], 64.0);
  const std::vector<LayerSummary> s = summary_from_heat(d.heat, 2);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].load.total, 1024.0);
  EXPECT_EQ(s[0].dropped_rate, 0.0);
}

TEST(ReportMetrics, BadLinesNameFileAndLine) {
  const std::string dir = moe_test::make_temp_dir("metrics");
  const std::string p =
      write_tmp(dir,
                "{\"step\":1,\"loss\":3,\"layers\":[{\"layer\":0,\"load\":[1,2]}]}\n"
                "not json\n"
                "[1,2]\n"
                "{\"loss\":3}\n"
                "{\"step\":2,\"loss\":\"x\"}\n"
                "{\"step\":3,\"layers\":[{\"layer\":0,\"load\":[1,2,3]}]}\n"
                "{\"step\":4,\"layers\":{\"layer\":0}}\n"
                "{\"step\":5,\"layers\":[{\"layer\":0,\"load\":[1,-2]}]}\n"
                "{\"step\":6,\"loss\":2.5}\n"
                "{\"step\":7,\"lo");
  ReportData d;
  try {
    report_load_metrics(&d, p);
    ADD_FAILURE() << "strict parsing accepted a bad line";
  } catch (const MoeError& e) {
    EXPECT_EQ(std::string(e.what()), p + ":2: not valid JSON");
  }
  const std::vector<std::string> w = report_load_metrics(&d, p, false);
  ASSERT_EQ(w.size(), 8u);
  EXPECT_EQ(w[0], p + ":2: not valid JSON (line skipped)");
  EXPECT_EQ(w[1], p + ":3: not a JSON object (line skipped)");
  EXPECT_EQ(w[2], p + ":4: no integer \"step\" (line skipped)");
  EXPECT_EQ(w[3], p + ":5: \"loss\" is not a number (line skipped)");
  EXPECT_EQ(w[4], p + ":6: layer 0 has 3 experts, earlier lines 2 (line skipped)");
  EXPECT_EQ(w[5], p + ":7: \"layers\" is not an array (line skipped)");
  EXPECT_EQ(w[6], p + ":8: layers[0].load holds a value that is not a count (line skipped)");
  EXPECT_EQ(w[7], p + ":10: not valid JSON (unfinished last line, skipped)");
  EXPECT_EQ(d.loss.train_step, std::vector<double>({1, 6}));
  EXPECT_EQ(d.heat.at(0).steps, std::vector<double>({1}));
  // Only an unfinished last line: strict parsing warns and goes on.
  const std::string q = write_tmp(dir, "{\"step\":1,\"loss\":3}\n{\"step\":2,");
  const std::vector<std::string> w2 = report_load_metrics(&d, q);
  ASSERT_EQ(w2.size(), 1u);
  EXPECT_EQ(d.loss.train_step, std::vector<double>({1}));
  EXPECT_THROW(report_load_metrics(&d, dir + "/none.jsonl"), MoeError);
  try {
    report_load_metrics(&d, dir + "/none.jsonl");
  } catch (const MoeError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/none.jsonl"), std::string::npos);
  }
  fs::remove_all(dir);
}

TEST(ReportMetrics, ResumedRunReplacesRepeatedSteps) {
  const std::string dir = moe_test::make_temp_dir("metrics");
  std::string text;
  for (int s : {1, 2, 3})
    text += "{\"step\":" + std::to_string(s) + ",\"loss\":" + std::to_string(10 + s) +
            ",\"layers\":[{\"layer\":0,\"load\":[1,1]}]" + (s == 3 ? ",\"val_loss\":9" : "") +
            "}\n";
  for (int s : {2, 3, 4})
    text += "{\"step\":" + std::to_string(s) + ",\"loss\":" + std::to_string(20 + s) +
            ",\"layers\":[{\"layer\":0,\"load\":[2,0]}]}\n";
  ReportData d;
  const std::vector<std::string> w = report_load_metrics(&d, write_tmp(dir, text));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find(":4: step 2 comes again"), std::string::npos);
  EXPECT_EQ(d.loss.train_step, std::vector<double>({1, 2, 3, 4}));
  EXPECT_EQ(d.loss.train_loss, std::vector<double>({11, 22, 23, 24}));
  EXPECT_TRUE(d.loss.val_step.empty());
  EXPECT_EQ(d.heat[0].steps, std::vector<double>({1, 2, 3, 4}));
  EXPECT_EQ(d.heat[0].load, std::vector<double>({1, 1, 2, 0, 2, 0, 2, 0}));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
