#include "analysis/report_html.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/report_svg.h"
#include "core/error.h"
#include "io/mapped_file.h"

namespace moe {

using report::css;
using report::fmt_num;

// ---- Escaping ----------------------------------------------------------------------------------

std::string html_escape(std::string_view s) {
  static const char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
  std::string o;
  o.reserve(s.size() + s.size() / 8);
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '&':
          o += "&amp;";
          break;
        case '<':
          o += "&lt;";
          break;
        case '>':
          o += "&gt;";
          break;
        case '"':
          o += "&quot;";
          break;
        case '\'':
          o += "&#39;";
          break;
        case '\t':
        case '\n':
          o += static_cast<char>(c);
          break;
        default:
          if (c < 0x20 || c == 0x7F)
            o += kReplacement;
          else
            o += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // Multi-byte UTF-8: validate (no overlongs, surrogates or code points past U+10FFFF).
    int len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF)
      len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
      len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
      len = 4, cp = c & 0x07;
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      ok = (d & 0xC0) == 0x80;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (ok && len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (ok && len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ok = false;
    if (ok && (cp == 0xFFFE || cp == 0xFFFF || (cp >= 0x80 && cp < 0xA0))) ok = false;
    if (ok) {
      o.append(s.data() + i, len);
      i += len;
    } else {
      o += kReplacement;
      ++i;
    }
  }
  return o;
}

// ---- Building blocks ---------------------------------------------------------------------------

LayerSummary layer_summary(int layer, const std::vector<double>& load, double dropped_rate,
                           double threshold) {
  LayerSummary s;
  s.layer = layer;
  s.load = load_stats(load, threshold);
  s.loads = load;
  s.dropped_rate = dropped_rate;
  for (int e : s.load.hot)
    s.alerts.push_back(
        strfmt("E%d gets %s× the mean load", e, fmt_num(load[e] / s.load.mean, 3).c_str()));
  if (!s.load.dead.empty()) {
    std::string list;
    for (size_t i = 0; i < s.load.dead.size() && i < 8; ++i)
      list += (i ? ", E" : "E") + std::to_string(s.load.dead[i]);
    if (s.load.dead.size() > 8) list += strfmt(" and %zu more", s.load.dead.size() - 8);
    s.alerts.push_back(list + " received no tokens");
  }
  if (dropped_rate > 0.01)
    s.alerts.push_back(report::fmt_pct(dropped_rate) + " of assignments dropped");
  return s;
}

std::vector<LayerSummary> summary_from_heat(const std::vector<LoadHeatmap>& heat, int last_steps,
                                            double threshold) {
  std::vector<LayerSummary> out;
  for (const LoadHeatmap& h : heat) {
    const int E = h.n_experts, S = static_cast<int>(h.steps.size());
    if (h.load.size() != static_cast<size_t>(S) * E)
      fail("heat map of layer %d: bad size", h.layer);
    std::vector<double> load(E, 0.0);
    double dsum = 0;
    int dn = 0;
    for (int r = std::max(0, S - std::max(last_steps, 1)); r < S; ++r) {
      for (int e = 0; e < E; ++e) load[e] += h.load[static_cast<size_t>(r) * E + e];
      if (static_cast<size_t>(r) < h.dropped.size() && std::isfinite(h.dropped[r]))
        dsum += h.dropped[r], ++dn;
    }
    out.push_back(layer_summary(h.layer, load, dn ? dsum / dn : -1.0, threshold));
  }
  return out;
}

LiftMatrix lift_matrix(const Specialisation& s, const std::vector<std::string>& labels,
                       const std::string& title, double min_count, int max_rows) {
  if (labels.size() != static_cast<size_t>(s.n_labels))
    fail("%s: %zu label names for %d labels", title.c_str(), labels.size(), s.n_labels);
  std::vector<int> rows;
  for (int l = 0; l < s.n_labels; ++l)
    if (s.label_total[l] >= min_count && s.label_total[l] > 0) rows.push_back(l);
  std::stable_sort(rows.begin(), rows.end(),
                   [&](int a, int b) { return s.label_total[a] > s.label_total[b]; });
  if (static_cast<int>(rows.size()) > std::max(max_rows, 0)) rows.resize(std::max(max_rows, 0));
  LiftMatrix m;
  m.title = title;
  m.n_experts = s.n_experts;
  m.cramers_v = s.cramers_v;
  for (int l : rows) {
    m.labels.push_back(labels[l]);
    m.label_count.push_back(s.label_total[l]);
    for (int e = 0; e < s.n_experts; ++e) {
      m.lift.push_back(s.lift[static_cast<size_t>(l) * s.n_experts + e]);
      m.residual.push_back(s.residual[static_cast<size_t>(l) * s.n_experts + e]);
    }
  }
  return m;
}

// ---- Page --------------------------------------------------------------------------------------

namespace {

constexpr int kWidth = 1160;

const char* kCss = R"CSS(
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f4f5f7;--card:#fff;--bad:#b91c1c}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font-size:14px;line-height:1.5;
  font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",
    "Liberation Sans","DejaVu Sans",sans-serif}
.wrap{max-width:1240px;margin:0 auto;padding:0 28px}
header.top{background:linear-gradient(135deg,#111827 0%,#1e293b 100%);color:#f9fafb;
  padding:30px 0 20px}
header.top h1{font-size:27px;line-height:1.2;margin:0 0 6px;font-weight:700;
  letter-spacing:-.015em;word-break:break-word}
header.top .sub{color:#94a3b8;font-size:13px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:12px 22px;
  margin:20px 0 18px}
.fact .k{font-size:11px;text-transform:uppercase;letter-spacing:.07em;color:#94a3b8}
.fact .v{font-size:15px;font-weight:600;color:#f8fafc;word-break:break-word}
nav.toc{display:flex;flex-wrap:wrap;gap:6px;border-top:1px solid #334155;padding-top:14px}
nav.toc a{color:#cbd5e1;text-decoration:none;font-size:13px;padding:3px 10px;border-radius:999px;
  background:#1f2a3d}
nav.toc a:hover{background:#334155;color:#fff}
main.wrap{padding-top:22px;padding-bottom:12px}
section.card{background:var(--card);border:1px solid var(--line);border-radius:12px;
  padding:20px 24px 22px;margin:0 0 20px;box-shadow:0 1px 3px rgba(15,23,42,.05)}
h2{font-size:18px;margin:0 0 4px;letter-spacing:-.01em}
h3{font-size:14px;margin:20px 0 6px;color:#1f2937}
h3 .meta{font-weight:400;color:var(--muted);margin-left:8px;font-size:13px}
p.desc{color:var(--muted);margin:0 0 14px;font-size:13px;max-width:880px}
.callout{border-radius:8px;padding:10px 16px;margin:0 0 20px;font-size:13.5px}
.callout.bad{background:#fef2f2;border:1px solid #fecaca;color:#7f1d1d}
.callout.good{background:#f0fdf4;border:1px solid #bbf7d0;color:#14532d}
.callout.note{background:#fffbeb;border:1px solid #fde68a;color:#78350f}
.callout ul{margin:4px 0 0;padding-left:20px}
.callout b{font-weight:650}
table.summary{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;
  font-size:13.5px}
table.summary th{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;
  color:var(--muted);font-weight:600;text-align:right;padding:8px 12px;
  border-bottom:2px solid var(--line);white-space:nowrap}
table.summary td{padding:8px 12px;border-bottom:1px solid #f0f1f3;text-align:right;
  white-space:nowrap}
table.summary th:first-child,table.summary td:first-child{text-align:left}
table.summary th:last-child,table.summary td:last-child{text-align:left;white-space:normal;
  width:40%}
table.summary tr:hover td{background:#f9fafb}
.meter{display:inline-block;width:54px;height:6px;border-radius:3px;background:#eef0f3;
  margin-left:8px;vertical-align:middle;overflow:hidden}
.meter i{display:block;height:100%;background:#6b8fd6;border-radius:3px}
.hot{color:#b91c1c;font-weight:650}.warm{color:#b45309;font-weight:600}.dim{color:#9ca3af}
.pill{display:inline-block;padding:1px 9px;margin:2px 4px 2px 0;border-radius:999px;
  font-size:12px;background:#fee2e2;color:#991b1b}
.pill.ok{background:#dcfce7;color:#166534}
svg{display:block;max-width:100%;height:auto;overflow:visible}
svg text{font-family:inherit}
.plot-bg{fill:#fff}
.grid line{stroke:#edeff2;stroke-width:1}
.axis{stroke:#9ca3af;stroke-width:1}
.tick{fill:#6b7280;font-size:11px;font-variant-numeric:tabular-nums}
.axis-label{fill:#4b5563;font-size:12px;font-weight:600}
.line{fill:none;stroke-linejoin:round;stroke-linecap:round}
.markers circle{stroke:#fff;stroke-width:1.5}
.hover rect{fill:transparent}
.hover rect:hover{fill:#0f172a;fill-opacity:.06}
.ref{stroke:#9ca3af;stroke-width:1.2;stroke-dasharray:6 4}
.ref.alert{stroke:#dc2626}
.ref-label{fill:#6b7280;font-size:11px;font-weight:600;paint-order:stroke;stroke:#fff;
  stroke-width:3px;stroke-linejoin:round}
.ref-label.alert{fill:#b91c1c}
.legend{fill:#374151;font-size:12px}
.legend-bg{fill:#fff;fill-opacity:.92;stroke:#e5e7eb}
.frame{fill:none;stroke:#cbd2da;stroke-width:1}
.col-label{fill:#374151;font-size:11.5px}
.cell-value{font-size:10.5px;font-weight:600;pointer-events:none;font-variant-numeric:tabular-nums}
.cells rect:hover{stroke:#0f172a;stroke-width:1.5}
.top-labels{fill:#6b7280;font-size:12px;white-space:pre}
.top-label{fill:#111827;font-weight:600}
.muted{fill:#9ca3af;color:#9ca3af}
.legend-bar{margin:2px 0 4px}
.heat-block{margin:4px 0 10px}
.swatches{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 14px}
.sw{display:inline-flex;align-items:center;gap:6px;font-size:12px;padding:2px 10px 2px 4px;
  border:1px solid var(--line);border-radius:999px;background:#fff;cursor:default}
.sw i{width:14px;height:14px;border-radius:4px;display:inline-block}
.sample-row{display:flex;gap:14px;align-items:flex-start;padding:8px 0;border-top:1px solid #f0f1f3}
.sample-row .lay{flex:0 0 64px;font-size:12px;font-weight:600;color:var(--muted);padding-top:4px;
  text-align:right}
.toks{font-size:14.5px;line-height:1.5}
.tok{display:inline-block;white-space:pre;line-height:1.35;padding:2px 3px;border-radius:4px;
  margin:0 1px 5px 0;transition:opacity .1s}
.empty{color:var(--muted);font-style:italic;margin:6px 0}
footer{color:var(--muted);font-size:12px;text-align:center;padding:6px 0 34px}
)CSS";

std::string cap(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string esc(const std::string& s) {
  return html_escape(s);
}

// Token text made visible: newline and tab become arrows.
std::string token_display(const std::string& t) {
  std::string o;
  for (char c : t) {
    if (c == '\n')
      o += "↵";
    else if (c == '\t')
      o += "→";
    else if (c == '\r')
      o += "␍";
    else
      o += c;
  }
  return o.empty() ? "∅" : o;
}

void validate(const ReportData& d) {
  if (d.loss.train_step.size() != d.loss.train_loss.size())
    fail("report: %zu train steps for %zu train losses", d.loss.train_step.size(),
         d.loss.train_loss.size());
  if (d.loss.val_step.size() != d.loss.val_loss.size())
    fail("report: %zu validation steps for %zu validation losses", d.loss.val_step.size(),
         d.loss.val_loss.size());
  for (const LoadHeatmap& h : d.heat)
    if (h.n_experts < 0 || h.load.size() != h.steps.size() * static_cast<size_t>(h.n_experts))
      fail("report: heat map of layer %d holds %zu loads for %zu steps x %d experts", h.layer,
           h.load.size(), h.steps.size(), h.n_experts);
  for (const auto* v : {&d.pos_lift, &d.genre_lift, &d.token_lift})
    for (const LiftMatrix& m : *v) {
      const size_t n = m.labels.size() * static_cast<size_t>(std::max(m.n_experts, 0));
      if (m.n_experts < 0 || m.lift.size() != n ||
          (!m.residual.empty() && m.residual.size() != n) ||
          (!m.label_count.empty() && m.label_count.size() != m.labels.size()))
        fail("report: lift matrix '%s' has inconsistent sizes", m.title.c_str());
    }
  const SampleRouting& s = d.sample;
  if (s.layers.size() != s.top1.size())
    fail("report: sample has %zu layer names for %zu rows", s.layers.size(), s.top1.size());
  for (const auto& row : s.top1)
    if (row.size() != s.tokens.size())
      fail("report: sample row has %zu experts for %zu tokens", row.size(), s.tokens.size());
}

int experts_of(const ReportData& d) {
  if (d.n_experts > 0) return d.n_experts;
  int E = 0;
  for (const LoadHeatmap& h : d.heat) E = std::max(E, h.n_experts);
  for (const auto& row : d.sample.top1)
    for (int e : row) E = std::max(E, e + 1);
  return E;
}

std::string section_open(const char* id, const std::string& title, const std::string& desc) {
  return strfmt("<section class=\"card\" id=\"%s\">\n<h2>", id) + esc(title) + "</h2>\n" +
         (desc.empty() ? "" : "<p class=\"desc\">" + esc(desc) + "</p>\n");
}

std::string empty_note(const std::string& s) {
  return "<p class=\"empty\">" + esc(s) + "</p>\n";
}

std::string header(const ReportData& d,
                   const std::vector<std::pair<const char*, const char*>>& toc) {
  std::string o = "<header class=\"top\"><div class=\"wrap\">\n<h1>" + esc(d.title) + "</h1>\n";
  o += "<div class=\"sub\">Mixture-of-Experts routing report · moe.cpp</div>\n";
  if (!d.facts.empty()) {
    o += "<div class=\"facts\">";
    for (const auto& [k, v] : d.facts)
      o += "<div class=\"fact\"><div class=\"k\">" + esc(k) + "</div><div class=\"v\">" + esc(v) +
           "</div></div>";
    o += "</div>\n";
  }
  o += "<nav class=\"toc\">";
  for (const auto& [id, name] : toc) o += strfmt("<a href=\"#%s\">", id) + esc(name) + "</a>";
  for (const auto& [name, href] : d.pages) o += "<a href=\"" + esc(href) + "\">" + esc(name) + "</a>";
  o += "</nav>\n</div></header>\n";
  return o;
}

std::string alerts_box(const ReportData& d) {
  std::string o;
  if (!d.notes.empty()) {
    o += "<div class=\"callout note\"><b>Notes</b><ul>";
    for (size_t i = 0; i < d.notes.size() && i < 20; ++i) o += "<li>" + esc(d.notes[i]) + "</li>";
    if (d.notes.size() > 20) o += strfmt("<li>… and %zu more</li>", d.notes.size() - 20);
    o += "</ul></div>\n";
  }
  if (d.summary.empty()) return o;
  std::string items;
  for (const LayerSummary& s : d.summary)
    for (const std::string& a : s.alerts)
      items += "<li><b>" + esc(cap(report_layer_name(d, s.layer))) + "</b>: " + esc(a) + "</li>";
  if (items.empty())
    o += "<div class=\"callout good\"><b>No load alerts.</b> Every expert in every MoE layer stays "
         "under " +
         strfmt("%g", d.alert_threshold) + "× the mean load and none is idle.</div>\n";
  else
    o += "<div class=\"callout bad\"><b>Load alerts</b><ul>" + items + "</ul></div>\n";
  return o;
}

std::string loss_section(const ReportData& d) {
  std::string o = section_open("loss", "Loss",
                               "Training loss per step (faint when smoothed: a centred moving "
                               "average is drawn over it) and validation loss. Hover for values.");
  const LossCurves& L = d.loss;
  if (L.train_step.empty() && L.val_step.empty())
    return o + empty_note("No loss recorded.") + "</section>\n";
  report::LineChart c;
  c.aria = "Training and validation loss by step";
  c.x_label = "step";
  c.y_label = "loss (nats / token)";
  const size_t n = L.train_loss.size();
  if (n > 0) {
    report::LineSeries raw{"train", report::series_colour(0), L.train_step, L.train_loss};
    if (n >= 100) {
      // Centred moving average over ~n/50 steps (no lag), skipping non-finite values.
      const size_t half = std::max<size_t>(2, n / 100);
      std::vector<double> smooth(n, NAN);
      std::vector<double> csum(n + 1, 0.0), ccnt(n + 1, 0.0);
      for (size_t i = 0; i < n; ++i) {
        const bool ok = std::isfinite(L.train_loss[i]);
        csum[i + 1] = csum[i] + (ok ? L.train_loss[i] : 0.0);
        ccnt[i + 1] = ccnt[i] + (ok ? 1.0 : 0.0);
      }
      for (size_t i = 0; i < n; ++i) {
        const size_t a = i >= half ? i - half : 0, b = std::min(n, i + half + 1);
        if (ccnt[b] > ccnt[a]) smooth[i] = (csum[b] - csum[a]) / (ccnt[b] - ccnt[a]);
      }
      raw.width = 1.2;
      raw.opacity = 0.35;
      raw.legend = false;
      raw.name = "train (raw)";
      c.series.push_back(raw);
      c.series.push_back({"train (smoothed)", report::series_colour(0), L.train_step, smooth, 2.4});
    } else {
      c.series.push_back(raw);
    }
  }
  if (!L.val_loss.empty()) {
    report::LineSeries v{"validation", report::series_colour(2), L.val_step, L.val_loss, 2.2};
    v.markers = L.val_loss.size() <= 400;
    c.series.push_back(v);
  }
  return o + report::svg_line_chart(c) + "</section>\n";
}

std::string meter(double v) {
  const double w = std::clamp(std::isfinite(v) ? v : 0.0, 0.0, 1.0) * 100;
  return "<span class=\"meter\"><i style=\"width:" + report::px(w) + "%\"></i></span>";
}

// A small bar chart of one layer's expert loads: the mean as a dashed line, experts over the alert
// threshold in red, idle experts as a red tick.
std::string load_bars(const LayerSummary& s, double threshold, const std::string& name) {
  const int E = static_cast<int>(s.loads.size());
  if (E == 0 || !(s.load.mean > 0)) return "<span class=\"dim\">—</span>";
  const double W = 240, H = 40;
  const double mx = std::max(*std::max_element(s.loads.begin(), s.loads.end()), s.load.mean);
  const double bw = W / E;
  std::string o = "<svg class=\"bars\" width=\"" + report::px(W) + "\" height=\"" + report::px(H) +
                  "\" viewBox=\"0 0 " + report::px(W) + " " + report::px(H) +
                  "\" role=\"img\" aria-label=\"" +
                  esc("Tokens per expert, " + name) + "\">";
  for (int e = 0; e < E; ++e) {
    const double v = s.loads[e], h = std::max(v / mx * (H - 2), v > 0 ? 1.0 : 0.0);
    const bool hot = v > threshold * s.load.mean;
    const char* fill = hot ? "#d62728" : "#4e79a7";
    if (v <= 0)
      o += "<rect x=\"" + report::px(e * bw) + "\" y=\"" + report::px(H - 2) + "\" width=\"" +
           report::px(std::max(bw - 0.5, 0.5)) + "\" height=\"2\" fill=\"#d62728\">";
    else
      o += "<rect x=\"" + report::px(e * bw) + "\" y=\"" + report::px(H - h) + "\" width=\"" +
           report::px(std::max(bw - 0.5, 0.5)) + "\" height=\"" + report::px(h) + "\" fill=\"" +
           fill + "\">";
    o += "<title>" + esc(strfmt("E%d: ", e) + fmt_num(v, 6) + " (" +
                         fmt_num(v / s.load.mean, 3) + "× mean)") +
         "</title></rect>";
  }
  const double ym = H - s.load.mean / mx * (H - 2);
  o += "<line x1=\"0\" x2=\"" + report::px(W) + "\" y1=\"" + report::px(ym) + "\" y2=\"" +
       report::px(ym) + "\" stroke=\"#333\" stroke-dasharray=\"3 2\" stroke-width=\"1\"/></svg>";
  return o;
}

std::string consistency_cell(double v) {
  if (!(v >= 0)) return "<span class=\"dim\">—</span>";
  return fmt_num(v, 3) + meter(v);
}

std::string balance_section(const ReportData& d) {
  std::string o = section_open(
      "balance", "Load balance by layer",
      "Gini = mean absolute difference of expert loads / (2 × mean): 0 for a uniform load, "
      "(E−1)/E when one expert takes every token. Entropy of the load distribution normalised by "
      "ln E (1 = uniform). CV = population std / mean. Alerts flag experts above " +
          strfmt("%g", d.alert_threshold) + "× the mean load, idle experts, and drops above 1%.");
  if (!d.summary_note.empty() && !d.summary.empty())
    o += "<p class=\"desc\"><b>Measured on:</b> " + esc(d.summary_note) + "</p>\n";
  if (d.summary.empty()) {
    o += empty_note("No per-layer summary was computed.");
  } else {
    bool any_perturb = false, any_ckpt = false;
    for (const LayerSummary& s : d.summary) {
      any_perturb |= s.consistency_perturb >= 0;
      any_ckpt |= s.consistency_ckpt >= 0;
    }
    o += "<table class=\"summary\"><thead><tr><th>Layer</th><th>Load per expert</th>"
         "<th>Assignments</th><th>Gini</th><th>Entropy (norm.)</th><th>CV</th><th>Max / mean</th>"
         "<th>Dropped</th>";
    if (any_perturb) o += "<th title=\"mean Jaccard overlap of top-k sets\">Consistency (perturbed)</th>";
    if (any_ckpt) o += "<th title=\"mean Jaccard overlap of top-k sets\">Consistency (other ckpt)</th>";
    o += "<th>Alerts</th></tr></thead><tbody>\n";
    for (const LayerSummary& s : d.summary) {
      const LoadStats& L = s.load;
      const char* mm = L.max_mean >= d.alert_threshold          ? "hot"
                       : L.max_mean >= 0.67 * d.alert_threshold ? "warm"
                                                                : "";
      std::string dropped = "<span class=\"dim\">—</span>";
      if (std::isfinite(s.dropped_rate) && s.dropped_rate >= 0)
        dropped = std::string("<span class=\"") + (s.dropped_rate > 0.01 ? "warm" : "") + "\">" +
                  report::fmt_pct(s.dropped_rate) + "</span>";
      std::string alerts;
      for (const std::string& a : s.alerts) alerts += "<span class=\"pill\">" + esc(a) + "</span>";
      if (alerts.empty()) alerts = "<span class=\"pill ok\">ok</span>";
      const std::string name = report_layer_name(d, s.layer);
      o += "<tr><td><b>" + esc(name.substr(6)) + "</b></td><td>" +
           load_bars(s, d.alert_threshold, name) +
           "</td><td>" + fmt_num(L.total, 6) + "</td><td>" + fmt_num(L.gini, 3) + meter(L.gini) +
           "</td><td>" + fmt_num(L.entropy_norm, 3) + meter(L.entropy_norm) + "</td><td>" +
           fmt_num(L.cv, 3) + "</td><td><span class=\"" + mm + "\">" + fmt_num(L.max_mean, 3) +
           "×</span></td><td>" + dropped + "</td>";
      if (any_perturb) o += "<td>" + consistency_cell(s.consistency_perturb) + "</td>";
      if (any_ckpt) o += "<td>" + consistency_cell(s.consistency_ckpt) + "</td>";
      o += "<td>" + alerts + "</td></tr>\n";
    }
    o += "</tbody></table>\n";
  }
  // Max/mean over training, one line per layer, from the heat maps.
  bool any = false;
  report::LineChart c;
  c.aria = "Max over mean expert load by training step, per layer";
  c.x_label = "step";
  c.y_label = "max / mean load";
  c.height = 260;
  c.y_from_zero = true;
  c.ref_lines = {{1.0, "balanced", false},
                 {d.alert_threshold, strfmt("alert threshold %g×", d.alert_threshold), true}};
  for (size_t i = 0; i < d.heat.size(); ++i) {
    const LoadHeatmap& h = d.heat[i];
    report::LineSeries s{
        report_layer_name(d, h.layer), report::series_colour(static_cast<int>(i)), {}, {}, 1.8};
    // Per step, averaged over buckets of steps when there are more than 400.
    const size_t S = h.steps.size(), per = std::max<size_t>(1, (S + 399) / 400);
    for (size_t r0 = 0; r0 < S; r0 += per) {
      double xs = 0, ys = 0;
      int cnt = 0;
      for (size_t r = r0; r < std::min(S, r0 + per); ++r) {
        const double* row = h.load.data() + r * h.n_experts;
        const double sum = std::accumulate(row, row + h.n_experts, 0.0);
        if (!(sum > 0)) continue;
        xs += h.steps[r];
        ys += *std::max_element(row, row + h.n_experts) / (sum / h.n_experts);
        ++cnt;
      }
      if (cnt == 0) continue;
      s.x.push_back(xs / cnt);
      s.y.push_back(ys / cnt);
    }
    any |= !s.x.empty();
    s.legend = d.heat.size() <= 8;
    c.series.push_back(std::move(s));
  }
  if (any) o += "<h3>Max / mean load over training</h3>\n" + report::svg_line_chart(c);
  return o + "</section>\n";
}

std::string heat_section(const ReportData& d) {
  std::string o = section_open(
      "load", "Expert load over training",
      "Share of each expert in the layer's assignments at every step (neighbouring steps averaged "
      "when there are many), relative to a uniform share of 1/E: red experts are overloaded, blue "
      "ones starved.");
  if (d.heat.empty()) return o + empty_note("No per-step loads recorded.") + "</section>\n";
  o += report::svg_ratio_legend("load ÷ mean", "");
  // Keep the page light: about 40k cells over all layers.
  int rows = 0;
  for (const LoadHeatmap& h : d.heat) rows += h.n_experts;
  const int cols = std::clamp(40000 / std::max(rows, 1), 40, 200);
  for (const LoadHeatmap& h : d.heat) {
    o += "<div class=\"heat-block\"><h3>" + esc(cap(report_layer_name(d, h.layer))) +
         strfmt("<span class=\"meta\">%d experts · %zu steps</span></h3>\n", h.n_experts,
                h.steps.size());
    o += h.steps.empty() ? empty_note("No steps.") : report::svg_load_heatmap(h, kWidth, cols);
    o += "</div>\n";
  }
  return o + "</section>\n";
}

std::string lift_section(const char* id, const std::string& title, const std::string& what,
                         const std::vector<LiftMatrix>& ms) {
  std::string o = section_open(
      id, title,
      "Lift = P(expert | " + what + ") / P(expert): above 1 (red) the expert receives that " +
          what +
          " more often than its overall share, below 1 (blue) less often. Faded cells are not "
          "significant (|adjusted standardized residual| < 3). At the right: each expert's "
          "strongest " +
          what + "s (lift ≥ 1.25, z ≥ 3).");
  if (ms.empty()) return o + empty_note("No labelled tokens were routed.") + "</section>\n";
  o += report::svg_ratio_legend("lift", "faded: not significant (|z| < 3)");
  for (const LiftMatrix& m : ms) {
    o += "<h3>" + esc(m.title);
    std::string meta = strfmt("%zu labels × %d experts", m.labels.size(), m.n_experts);
    if (m.cramers_v >= 0) meta += " · Cramér's V " + fmt_num(m.cramers_v, 3);
    o += "<span class=\"meta\">" + esc(meta) + "</span></h3>\n";
    o += m.labels.empty() || m.n_experts == 0 ? empty_note("No label has enough tokens.")
                                              : report::svg_lift_matrix(m, kWidth);
  }
  return o + "</section>\n";
}

std::string sample_section(const ReportData& d, int E) {
  const SampleRouting& s = d.sample;
  std::string o = section_open("sample", "Routing of a sample text",
                               "Each token coloured by the expert it was sent to first (top-1), "
                               "one line per MoE layer. Hover over a token for details, over an "
                               "expert in the legend to highlight its tokens.");
  if (s.tokens.empty() || s.top1.empty()) return o + empty_note("No sample text.") + "</section>\n";
  std::string rules;
  o += "<div class=\"sample\">\n<div class=\"swatches\">";
  for (int e = 0; e < E; ++e) {
    o += strfmt("<span class=\"sw\" data-e=\"%d\"><i style=\"background:%s\"></i>E%d</span>", e,
                css(report::expert_colour(e, E)).c_str(), e);
    if (E <= 64)
      rules += strfmt(
          ".sample:has(.sw[data-e=\"%d\"]:hover) .tok:not([data-e=\"%d\"]){opacity:.15}", e, e);
  }
  o += "</div>\n";
  for (size_t r = 0; r < s.top1.size(); ++r) {
    const std::string name = report_layer_name(d, s.layers[r]);
    o += "<div class=\"sample-row\"><div class=\"lay\">" + esc(name) + "</div><div class=\"toks\">";
    for (size_t t = 0; t < s.tokens.size(); ++t) {
      const int e = s.top1[r][t];
      const report::Rgb bg = report::expert_colour(e < E ? e : -1, E);
      const std::string tip = "“" + s.tokens[t] + "” → " +
                              (e >= 0 ? strfmt("E%d", e) : std::string("no expert")) +
                              " · " + name + strfmt(" · token %zu", t);
      o += strfmt("<span class=\"tok\" data-e=\"%d\" style=\"background:%s;color:%s\" title=\"", e,
                  css(bg).c_str(), report::light_background(bg) ? "#111827" : "#ffffff") +
           esc(tip) + "\">" + esc(token_display(s.tokens[t])) + "</span><wbr>";
    }
    o += "</div></div>\n";
  }
  o += "</div>\n";
  if (!rules.empty()) o += "<style>" + rules + "</style>\n";
  return o + "</section>\n";
}

}  // namespace

std::string report_layer_name(const ReportData& d, int layer) {
  if (d.mtp_first >= 0 && layer >= d.mtp_first)
    return strfmt("layer %d (MTP %d)", layer, layer - d.mtp_first + 1);
  return strfmt("layer %d", layer);
}

std::string report_html(const ReportData& d) {
  validate(d);
  const int E = experts_of(d);
  std::string o;
  o.reserve(1 << 20);
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
       "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
       "style-src 'unsafe-inline'; img-src data:\">\n"
       "<meta name=\"generator\" content=\"moe.cpp\">\n<title>" +
       esc(d.title) + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n";
  o += header(d, {{"overview", "Overview"},
                  {"loss", "Loss"},
                  {"balance", "Balance"},
                  {"load", "Load over training"},
                  {"pos", "Part of speech"},
                  {"genre", "Genre"},
                  {"tokens", "Tokens"},
                  {"sample", "Sample"}});
  o += "<main class=\"wrap\">\n<div id=\"overview\">" + alerts_box(d) + "</div>\n";
  o += loss_section(d);
  o += balance_section(d);
  o += heat_section(d);
  o += lift_section("pos", "Expert specialisation: part of speech", "POS tag", d.pos_lift);
  o += lift_section("genre", "Expert specialisation: genre", "genre", d.genre_lift);
  o += lift_section("tokens", "Expert specialisation: frequent tokens", "token", d.token_lift);
  o += sample_section(d, E);
  o += "</main>\n<footer>Generated by moe.cpp · self-contained: no scripts, no network.</footer>\n"
       "</body>\n</html>\n";
  return o;
}

const char* report_css() { return kCss; }

void report_write(const std::string& path, const ReportData& d) {
  const std::string html = report_html(d);
  write_file_atomic(path, html.data(), html.size());
}

}  // namespace moe
