// The experiments' plots and page, drawn with the routing report's renderer and style sheet
// (analysis/report_svg.h, report_html.h): a standalone SVG per experiment for docs/experiments.md,
// and one self-contained HTML page with every experiment's table and plot.
#include <algorithm>
#include <cmath>

#include "analysis/experiments.h"
#include "analysis/report_html.h"
#include "analysis/report_svg.h"
#include "core/error.h"
#include "io/mapped_file.h"

namespace moe {

namespace {

constexpr const char* kFont =
    "svg{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,"
    "\"Noto Sans\",\"Liberation Sans\",\"DejaVu Sans\",sans-serif;background:#fff}";

std::string chart(const ExpResult& r) {
  report::LineChart c;
  c.aria = "Validation loss of " + r.name + ", mean over seeds";
  c.x_label = "step";
  c.y_label = "validation loss (nats / token)";
  for (size_t i = 0; i < r.configs.size(); ++i) {
    report::LineSeries s;
    s.name = r.configs[i].name;
    s.colour = report::series_colour(static_cast<int>(i));
    experiment_mean_curve(r.configs[i], &s.x, &s.y);
    s.markers = s.x.size() <= 60;
    s.width = r.configs[i].name == r.reference ? 3.0 : 2.0;
    c.series.push_back(s);
  }
  return report::svg_line_chart(c);
}

}  // namespace

std::string experiment_svg(const ExpResult& r) {
  std::string svg = chart(r);
  const size_t open_end = svg.find('>');
  if (open_end == std::string::npos) fail("experiment %s: the chart has no <svg> element", r.name.c_str());
  // A standalone file carries the report's style sheet (the chart's classes) inside itself.
  svg.insert(open_end + 1, std::string("\n<style><![CDATA[") + report_css() + kFont + "]]></style>");
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + svg;
}

namespace {

std::string table_html(const ExpResult& r) {
  const std::vector<std::vector<std::string>> t = experiment_table(r);
  std::string o = "<table class=\"summary\">\n<tr>";
  for (const std::string& h : t[0]) o += "<th>" + html_escape(h) + "</th>";
  o += "</tr>\n";
  for (size_t i = 1; i < t.size(); ++i) {
    o += "<tr>";
    for (const std::string& c : t[i]) o += "<td>" + html_escape(c) + "</td>";
    o += "</tr>\n";
  }
  return o + "</table>\n";
}

std::string section(const ExpResult& r) {
  std::string o = "<section class=\"card\" id=\"" + html_escape(r.name) + "\">\n<h2>" +
                  html_escape(r.title) + "</h2>\n<p class=\"desc\">" + html_escape(r.claim) + "</p>\n";
  if (r.quick)
    o += "<div class=\"callout note\"><b>Quick mode.</b> " +
         strfmt("%d steps per configuration: too few to test the claim.", r.steps) + "</div>\n";
  o += "<p class=\"desc\">" + html_escape(r.mode_describe) +
       strfmt("; %d steps per configuration", r.steps) +
       (r.base_steps > 0 ? strfmt(", after %d steps of each base model", r.base_steps) : "") +
       strfmt("; %zu seeds, mean ± sd.", r.configs.empty() ? 0 : r.configs[0].seeds.size()) +
       "</p>\n";
  o += table_html(r);
  o += "<p class=\"desc\">" + html_escape(experiment_ranking(r)) + "</p>\n";
  o += "<h3>Validation loss<span class=\"meta\">mean over seeds</span></h3>\n" + chart(r);
  return o + "</section>\n";
}

}  // namespace

std::vector<ExpResult> experiments_load_dir(const std::string& dir) {
  std::vector<ExpResult> rs;
  for (const Experiment& e : experiment_registry()) {
    const std::string p = dir + "/" + e.name + ".json";
    if (file_exists(p)) rs.push_back(experiment_from_json(read_text_file(p), p));
  }
  return rs;
}

std::string experiments_html(const std::vector<ExpResult>& rs) {
  const bool quick = std::any_of(rs.begin(), rs.end(), [](const ExpResult& r) { return r.quick; });
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "style-src 'unsafe-inline'; img-src data:\">\n"
      "<meta name=\"generator\" content=\"moe.cpp\">\n<title>MoE experiments</title>\n<style>" +
      std::string(report_css()) + "</style>\n</head>\n<body>\n";
  o += "<header class=\"top\"><div class=\"wrap\">\n<h1>MoE experiments</h1>\n"
       "<div class=\"sub\">The claims of the MoE literature, trained on the Brown Corpus · "
       "moe.cpp</div>\n<div class=\"facts\">";
  o += "<div class=\"fact\"><div class=\"k\">experiments</div><div class=\"v\">" +
       strfmt("%zu", rs.size()) + "</div></div>";
  o += "<div class=\"fact\"><div class=\"k\">mode</div><div class=\"v\">" +
       std::string(quick ? "quick (too few steps to test the claims)" : "full") + "</div></div>";
  o += "</div>\n<nav class=\"toc\">";
  for (const ExpResult& r : rs)
    o += "<a href=\"#" + html_escape(r.name) + "\">" + html_escape(r.name) + "</a>";
  o += "</nav>\n</div></header>\n<main class=\"wrap\">\n";
  if (rs.empty()) o += "<p class=\"empty\">No experiment results.</p>\n";
  for (const ExpResult& r : rs) o += section(r);
  o += "</main>\n<footer>Generated by moe.cpp · self-contained: no scripts, no network."
       "</footer>\n</body>\n</html>\n";
  return o;
}

}  // namespace moe
