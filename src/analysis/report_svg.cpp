#include "analysis/report_svg.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace moe::report {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Rgb hex_rgb(unsigned v) {
  return {static_cast<double>((v >> 16) & 255), static_cast<double>((v >> 8) & 255),
          static_cast<double>(v & 255)};
}

Rgb mix(Rgb a, Rgb b, double t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

Rgb hsl(double h, double s, double l) {
  h = std::fmod(h, 360.0);
  if (h < 0) h += 360.0;
  const double c = (1 - std::fabs(2 * l - 1)) * s,
               x = c * (1 - std::fabs(std::fmod(h / 60, 2) - 1));
  const double m = l - c / 2;
  double r = 0, g = 0, b = 0;
  if (h < 60)
    r = c, g = x;
  else if (h < 120)
    r = x, g = c;
  else if (h < 180)
    g = c, b = x;
  else if (h < 240)
    g = x, b = c;
  else if (h < 300)
    r = x, b = c;
  else
    r = c, b = x;
  return {(r + m) * 255, (g + m) * 255, (b + m) * 255};
}

// Ratio in (0, inf) to a colour-scale position: log2 over [-2, 2] (a quarter to four times).
double ratio_pos(double ratio) {
  if (!(ratio > 0)) return -1.0;
  return std::clamp(std::log2(ratio) / 2.0, -1.0, 1.0);
}

std::string ratio_label(double l2) {
  static const char* names[] = {"¼×", "½×", "1×", "2×", "4×"};
  return names[static_cast<int>(l2) + 2];
}

std::string svg_open(double w, double h, const std::string& cls, const std::string& aria) {
  return strfmt(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"%s\" width=\"%s\" height=\"%s\" "
      "viewBox=\"0 0 %s %s\" role=\"img\" aria-label=\"%s\">\n",
      cls.c_str(), px(w).c_str(), px(h).c_str(), px(w).c_str(), px(h).c_str(),
      html_escape(aria).c_str());
}

std::string text_el(double x, double y, const std::string& cls, const std::string& anchor,
                    const std::string& s) {
  return "<text class=\"" + cls + "\" x=\"" + px(x) + "\" y=\"" + px(y) + "\" text-anchor=\"" +
         anchor + "\">" + html_escape(s) + "</text>\n";
}

// Index of the point of `xs` (ascending) nearest to x; -1 if empty.
int nearest(const std::vector<double>& xs, double x) {
  if (xs.empty()) return -1;
  const auto it = std::lower_bound(xs.begin(), xs.end(), x);
  if (it == xs.begin()) return 0;
  if (it == xs.end()) return static_cast<int>(xs.size()) - 1;
  const int i = static_cast<int>(it - xs.begin());
  return (x - xs[i - 1] <= xs[i] - x) ? i - 1 : i;
}

std::string truncate_label(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n - 1;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 start
  return s.substr(0, cut) + "…";
}

}  // namespace

std::string css(Rgb c) {
  auto q = [](double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 255.0))); };
  return strfmt("#%02x%02x%02x", q(c.r), q(c.g), q(c.b));
}

Rgb diverging(double t) {
  // ColorBrewer RdBu (9 classes), blue for low, red for high.
  static const unsigned stops[] = {0x2166ac, 0x4393c3, 0x92c5de, 0xd1e5f0, 0xf7f7f7,
                                   0xfddbc7, 0xf4a582, 0xd6604d, 0xb2182b};
  if (std::isnan(t)) return hex_rgb(0xeef0f3);
  const double u = (std::clamp(t, -1.0, 1.0) + 1.0) * 4.0;
  const int i = std::min(static_cast<int>(u), 7);
  return mix(hex_rgb(stops[i]), hex_rgb(stops[i + 1]), u - i);
}

Rgb expert_colour(int e, int n_experts) {
  static const unsigned t10[] = {0x4e79a7, 0xf28e2b, 0xe15759, 0x76b7b2, 0x59a14f,
                                 0xedc948, 0xb07aa1, 0xff9da7, 0x9c755f, 0xbab0ac};
  static const unsigned t20[] = {0x4e79a7, 0xa0cbe8, 0xf28e2b, 0xffbe7d, 0x59a14f,
                                 0x8cd17d, 0xb6992d, 0xf1ce63, 0x499894, 0x86bcb6,
                                 0xe15759, 0xff9d9a, 0x79706e, 0xbab0ac, 0xd37295,
                                 0xfabfd2, 0xb07aa1, 0xd4a6c8, 0x9d7660, 0xd7b5a6};
  if (e < 0) return hex_rgb(0xd1d5db);
  if (n_experts <= 10) return hex_rgb(t10[e % 10]);
  if (n_experts <= 20) return hex_rgb(t20[e % 20]);
  static const double light[] = {0.50, 0.66, 0.38};
  return hsl(e * 137.508, 0.62, light[e % 3]);
}

Rgb series_colour(int i) {
  static const unsigned c[] = {0x4269d0, 0xefb118, 0xff725c, 0x6cc5b0, 0x3ca951,
                               0xff8ab7, 0xa463f2, 0x97bbf5, 0x9c6b4e, 0x9498a0};
  return hex_rgb(c[((i % 10) + 10) % 10]);
}

bool light_background(Rgb c) {
  auto lin = [](double v) {
    v /= 255.0;
    return v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b) > 0.30;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  std::vector<double> t;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9 && t.size() < 64; ++k)
    t.push_back(k == 0 ? 0.0 : k * step);
  return t;
}

std::string tick_label(double v, double spacing) {
  if (std::fabs(v) >= 10000 && std::fmod(v, 1000.0) == 0) return strfmt("%gk", v / 1000.0);
  int dec = spacing > 0 ? static_cast<int>(std::ceil(-std::log10(spacing) - 1e-9)) : 2;
  dec = std::clamp(dec, 0, 6);
  return strfmt("%.*f", dec, v);
}

std::string fmt_num(double v, int sig) {
  if (!std::isfinite(v)) return std::isnan(v) ? "n/a" : (v > 0 ? "∞" : "−∞");
  if (v == 0) return "0";
  const double a = std::fabs(v);
  const bool integral = a < 1e15 && v == std::floor(v);
  if (!integral && (a >= 1e6 || a < 1e-3)) return strfmt("%.*g", sig, v);
  if (a >= 1000 || integral) {
    std::string digits = strfmt("%.0f", a), out;
    for (size_t i = 0; i < digits.size(); ++i) {
      if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
      out += digits[i];
    }
    return (v < 0 ? "-" : "") + out;
  }
  const int dec = std::max(0, sig - 1 - static_cast<int>(std::floor(std::log10(a))));
  return strfmt("%.*f", dec, v);
}

std::string fmt_pct(double rate) {
  if (!std::isfinite(rate)) return "n/a";
  const double v = 100 * rate;
  if (v == 0) return "0%";
  return strfmt(v >= 9.95 ? "%.0f%%" : v >= 0.995 ? "%.1f%%" : "%.2f%%", v);
}

std::string px(double v) {
  if (!std::isfinite(v)) v = 0;
  std::string s = strfmt("%.1f", v);
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

// ---- Line chart --------------------------------------------------------------------------------

namespace {

double legend_entry_width(const LineSeries& s) { return 34 + 6.8 * static_cast<double>(s.name.size()) + 14; }

// Rows of legend entries (series indices), each at most `width` wide; one row if all fit.
std::vector<std::vector<size_t>> legend_rows(const LineChart& c, double width) {
  std::vector<std::vector<size_t>> rows;
  double x = width;
  for (size_t i = 0; i < c.series.size(); ++i) {
    if (!c.series[i].legend) continue;
    const double w = legend_entry_width(c.series[i]);
    if (rows.empty() || x + w > width) rows.emplace_back(), x = 0;
    rows.back().push_back(i);
    x += w;
  }
  return rows;
}

// One legend row: a line (and marker) and the name of each series, from x at baseline y.
std::string legend_row(const LineChart& c, const std::vector<size_t>& row, double x, double y) {
  std::string o;
  for (size_t i : row) {
    const LineSeries& s = c.series[i];
    o += "<line x1=\"" + px(x) + "\" x2=\"" + px(x + 24) + "\" y1=\"" + px(y + 8) + "\" y2=\"" +
         px(y + 8) + "\" stroke=\"" + css(s.colour) + "\" stroke-width=\"3\" stroke-linecap=\"round\"/>";
    if (s.markers)
      o += "<circle cx=\"" + px(x + 12) + "\" cy=\"" + px(y + 8) + "\" r=\"3.5\" fill=\"" +
           css(s.colour) + "\"/>";
    o += text_el(x + 30, y + 12, "legend", "start", s.name);
    x += legend_entry_width(s);
  }
  return o;
}

}  // namespace

std::string svg_line_chart(const LineChart& c) {
  const double W = c.width, ml = 62, mr = 18, mb = 44;
  // A legend too wide for one row inside the plot goes above it, in rows, and the chart grows.
  const std::vector<std::vector<size_t>> rows = legend_rows(c, W - ml - mr - 16);
  const double above = rows.size() > 1 ? 24.0 * static_cast<double>(rows.size()) + 4 : 0.0;
  const double H = c.height + above, mt = 14 + above;
  const double pw = W - ml - mr, ph = H - mt - mb;
  double x0 = kInf, x1 = -kInf, y0 = kInf, y1 = -kInf;
  for (const LineSeries& s : c.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  for (const RefLine& r : c.ref_lines) y0 = std::min(y0, r.y), y1 = std::max(y1, r.y);
  if (c.y_from_zero) y0 = std::min(y0, 0.0);
  if (x1 - x0 <= 0) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 <= 0) y0 -= 0.5, y1 += 0.5;
  const double pad = (y1 - y0) * 0.06;
  y1 += pad;
  if (!(c.y_from_zero && y0 == 0)) y0 -= pad;
  auto sx = [&](double x) { return ml + (x - x0) / (x1 - x0) * pw; };
  auto sy = [&](double y) { return mt + ph - (y - y0) / (y1 - y0) * ph; };

  std::string o = svg_open(W, H, "chart", c.aria);
  o += "<rect class=\"plot-bg\" x=\"" + px(ml) + "\" y=\"" + px(mt) + "\" width=\"" + px(pw) +
       "\" height=\"" + px(ph) + "\"/>\n";
  const std::vector<double> yt = nice_ticks(y0, y1, 6), xt = nice_ticks(x0, x1, 9);
  const double ys = yt.size() > 1 ? yt[1] - yt[0] : 0, xs = xt.size() > 1 ? xt[1] - xt[0] : 0;
  o += "<g class=\"grid\">";
  for (double v : yt)
    o += "<line x1=\"" + px(ml) + "\" x2=\"" + px(ml + pw) + "\" y1=\"" + px(sy(v)) + "\" y2=\"" +
         px(sy(v)) + "\"/>";
  for (double v : xt)
    o += "<line x1=\"" + px(sx(v)) + "\" x2=\"" + px(sx(v)) + "\" y1=\"" + px(mt) + "\" y2=\"" +
         px(mt + ph) + "\"/>";
  o += "</g>\n";
  for (double v : yt) o += text_el(ml - 8, sy(v) + 4, "tick", "end", tick_label(v, ys));
  for (double v : xt) o += text_el(sx(v), mt + ph + 17, "tick", "middle", tick_label(v, xs));
  o += "<line class=\"axis\" x1=\"" + px(ml) + "\" x2=\"" + px(ml + pw) + "\" y1=\"" + px(mt + ph) +
       "\" y2=\"" + px(mt + ph) + "\"/>\n";
  o += text_el(ml + pw / 2, H - 6, "axis-label", "middle", c.x_label);
  o += "<text class=\"axis-label\" transform=\"rotate(-90)\" x=\"" + px(-(mt + ph / 2)) +
       "\" y=\"15\" text-anchor=\"middle\">" + html_escape(c.y_label) + "</text>\n";

  // Hover strips (under the lines): the values of every series near that step.
  size_t longest = 0;
  for (const LineSeries& s : c.series) longest = std::max(longest, s.x.size());
  const int n_strips = static_cast<int>(std::min<size_t>(longest, 160));
  if (n_strips > 0) {
    o += "<g class=\"hover\">";
    const double sw = pw / n_strips;
    for (int k = 0; k < n_strips; ++k) {
      const double xa = x0 + (x1 - x0) * k / n_strips, xb = x0 + (x1 - x0) * (k + 1) / n_strips;
      std::string tip;
      for (const LineSeries& s : c.series) {
        if (!s.hover) continue;
        const int i = nearest(s.x, (xa + xb) / 2);
        if (i < 0 || s.x[i] < xa - (xb - xa) || s.x[i] > xb + (xb - xa)) continue;
        if (tip.empty()) tip = c.x_label + " " + fmt_num(s.x[i], 6);
        tip += "\n" + s.name + ": " + fmt_num(s.y[i], 4);
      }
      if (tip.empty()) continue;
      o += "<rect x=\"" + px(ml + k * sw) + "\" y=\"" + px(mt) + "\" width=\"" + px(sw) +
           "\" height=\"" + px(ph) + "\"><title>" + html_escape(tip) + "</title></rect>";
    }
    o += "</g>\n";
  }
  for (const RefLine& r : c.ref_lines) {
    const std::string cls = r.alert ? "ref alert" : "ref";
    o += "<line class=\"" + cls + "\" x1=\"" + px(ml) + "\" x2=\"" + px(ml + pw) + "\" y1=\"" +
         px(sy(r.y)) + "\" y2=\"" + px(sy(r.y)) + "\"/>\n";
    o += text_el(ml + 8, sy(r.y) - 5, r.alert ? "ref-label alert" : "ref-label", "start", r.label);
  }
  for (const LineSeries& s : c.series) {
    // Path, decimated to the first/min/max/last point per pixel column for long series.
    std::string d;
    const size_t n = std::min(s.x.size(), s.y.size());
    const bool decimate = n > static_cast<size_t>(3 * pw);
    bool pen = false;
    size_t i = 0;
    while (i < n) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        pen = false, ++i;
        continue;
      }
      size_t j = i + 1;
      const int col = static_cast<int>(sx(s.x[i]));
      if (decimate)
        while (j < n && std::isfinite(s.y[j]) && static_cast<int>(sx(s.x[j])) == col) ++j;
      size_t lo = i, hi = i;
      for (size_t q = i; q < j; ++q) {
        if (s.y[q] < s.y[lo]) lo = q;
        if (s.y[q] > s.y[hi]) hi = q;
      }
      std::vector<size_t> pts = {i, std::min(lo, hi), std::max(lo, hi), j - 1};
      pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
      for (size_t q : pts) {
        d += (pen ? "L" : "M") + px(sx(s.x[q])) + "," + px(sy(s.y[q]));
        pen = true;
      }
      i = j;
    }
    if (!d.empty())
      o += "<path class=\"line\" d=\"" + d + "\" stroke=\"" + css(s.colour) + "\" stroke-width=\"" +
           px(s.width) + "\"" +
           (s.opacity < 1 ? " stroke-opacity=\"" + fmt_num(s.opacity) + "\"" : "") + "><title>" +
           html_escape(s.name) + "</title></path>\n";
    if (s.markers) {
      o += "<g class=\"markers\">";
      for (size_t q = 0; q < n; ++q)
        if (std::isfinite(s.x[q]) && std::isfinite(s.y[q]))
          o += "<circle cx=\"" + px(sx(s.x[q])) + "\" cy=\"" + px(sy(s.y[q])) +
               "\" r=\"3.5\" fill=\"" + css(s.colour) + "\"><title>" +
               html_escape(s.name + " · " + c.x_label + " " + fmt_num(s.x[q], 6) + ": " +
                           fmt_num(s.y[q], 4)) +
               "</title></circle>";
      o += "</g>\n";
    }
  }
  // Legend, top right inside the plot (or in rows above it).
  if (rows.size() == 1) {
    double lw = 0;
    for (size_t i : rows[0]) lw += legend_entry_width(c.series[i]);
    const double x = ml + pw - lw - 8, y = mt + 10;
    o += "<rect class=\"legend-bg\" x=\"" + px(x - 8) + "\" y=\"" + px(y - 4) + "\" width=\"" +
         px(lw + 8) + "\" height=\"24\" rx=\"4\"/>\n";
    o += legend_row(c, rows[0], x, y);
  } else {
    for (size_t r = 0; r < rows.size(); ++r) o += legend_row(c, rows[r], ml, 8 + 24.0 * r);
  }
  o += "</svg>\n";
  return o;
}

// ---- Heat map ----------------------------------------------------------------------------------

std::string svg_load_heatmap(const LoadHeatmap& h, int width, int max_cols) {
  const int E = h.n_experts, S = static_cast<int>(h.steps.size());
  MOE_CHECK(h.load.size() == static_cast<size_t>(S) * E);
  const int B = std::max(1, std::min(S, std::max(max_cols, 1)));
  const double ml = 50, mr = 12, mt = 6, mb = 38;
  const double pw = width - ml - mr, cw = pw / B;
  const double rh = std::clamp(std::round(240.0 / std::max(E, 1)), 4.0, 22.0), ph = rh * E;
  const double H = mt + ph + mb;
  std::string o = svg_open(width, H, "chart heat",
                           strfmt("Load heat map of layer %d: experts by training step", h.layer));
  o += "<g class=\"cells\" shape-rendering=\"crispEdges\">";
  std::vector<double> acc(E);
  for (int b = 0; b < B; ++b) {
    const int r0 = static_cast<int>(static_cast<int64_t>(b) * S / B);
    const int r1 = static_cast<int>(static_cast<int64_t>(b + 1) * S / B);
    std::fill(acc.begin(), acc.end(), 0.0);
    double total = 0;
    for (int r = r0; r < r1; ++r)
      for (int e = 0; e < E; ++e) {
        const double v = h.load[static_cast<size_t>(r) * E + e];
        if (std::isfinite(v) && v > 0) acc[e] += v, total += v;
      }
    const std::string steps =
        r1 - r0 > 1 ? "steps " + fmt_num(h.steps[r0], 6) + "–" + fmt_num(h.steps[r1 - 1], 6)
                    : "step " + fmt_num(h.steps[r0], 6);
    const double x = ml + b * cw;
    for (int e = 0; e < E; ++e) {
      const double frac = total > 0 ? acc[e] / total : 0.0;
      const Rgb col = total > 0 ? diverging(ratio_pos(frac * E)) : Rgb{243, 244, 246};
      const std::string tip =
          strfmt("E%d · ", e) + steps + " · " +
          (total > 0 ? fmt_num(100 * frac, 3) + "% (" + fmt_num(frac * E, 3) + "× mean)"
                     : std::string("no tokens"));
      o += "<rect x=\"" + px(x) + "\" y=\"" + px(mt + e * rh) + "\" width=\"" + px(cw + 0.6) +
           "\" height=\"" + px(rh) + "\" fill=\"" + css(col) + "\"><title>" + html_escape(tip) +
           "</title></rect>";
    }
  }
  o += "</g>\n<rect class=\"frame\" x=\"" + px(ml) + "\" y=\"" + px(mt) + "\" width=\"" + px(pw) +
       "\" height=\"" + px(ph) + "\"/>\n";
  const int every = std::max(1, static_cast<int>(std::ceil(13.0 / rh)));
  for (int e = 0; e < E; e += every)
    o += text_el(ml - 6, mt + e * rh + rh / 2 + 4, "tick", "end", strfmt("E%d", e));
  if (S > 0) {
    const std::vector<double> xt = nice_ticks(h.steps.front(), h.steps.back(), 9);
    const double xs = xt.size() > 1 ? xt[1] - xt[0] : 0;
    for (double v : xt) {
      const int i =
          static_cast<int>(std::lower_bound(h.steps.begin(), h.steps.end(), v) - h.steps.begin());
      const int b =
          std::min(B - 1, static_cast<int>(static_cast<int64_t>(std::min(i, S - 1)) * B / S));
      const double x = ml + (b + 0.5) * cw;
      o += "<line class=\"axis\" x1=\"" + px(x) + "\" x2=\"" + px(x) + "\" y1=\"" + px(mt + ph) +
           "\" y2=\"" + px(mt + ph + 4) + "\"/>";
      o += text_el(x, mt + ph + 16, "tick", "middle", tick_label(v, xs));
    }
  }
  o += text_el(ml + pw / 2, H - 4, "axis-label", "middle", "training step");
  o += "</svg>\n";
  return o;
}

// ---- Lift matrix -------------------------------------------------------------------------------

std::string svg_lift_matrix(const LiftMatrix& m, int width) {
  const int L = static_cast<int>(m.labels.size()), E = m.n_experts;
  MOE_CHECK(m.lift.size() == static_cast<size_t>(L) * E);
  const bool has_z = m.residual.size() == m.lift.size();
  const bool has_n = m.label_count.size() == static_cast<size_t>(L);
  size_t longest = 1;
  for (const std::string& s : m.labels) longest = std::max(longest, std::min<size_t>(s.size(), 14));
  const double ml = 46, rp = 290;
  const double mt = 10 + 6.4 * static_cast<double>(longest) * 0.72 + 8;
  const double cw = std::clamp(std::floor((width - ml - rp) / std::max(L, 1)), 14.0, 42.0);
  const double rh = E <= 12 ? 24 : E <= 24 ? 18 : E <= 48 ? 13 : 10;
  const double pw = cw * L, ph = rh * E, W = std::min<double>(width, ml + pw + rp), H = mt + ph + 8;
  std::string o = svg_open(W, H, "chart lift", m.title + ": lift of each label per expert");
  for (int l = 0; l < L; ++l) {
    const double x = ml + (l + 0.5) * cw + 3, y = mt - 6;
    std::string tip = m.labels[l];
    if (has_n) tip += " · " + fmt_num(m.label_count[l], 6) + " tokens";
    o += "<text class=\"col-label\" transform=\"translate(" + px(x) + "," + px(y) +
         ") rotate(-45)\">" + html_escape(truncate_label(m.labels[l], 14)) + "<title>" +
         html_escape(tip) + "</title></text>";
  }
  o += "\n<g class=\"cells\">";
  const bool values = cw >= 30 && rh >= 16;
  for (int e = 0; e < E; ++e) {
    for (int l = 0; l < L; ++l) {
      const size_t i = static_cast<size_t>(l) * E + e;
      const double lift = m.lift[i], z = has_z ? m.residual[i] : NAN;
      const bool faint = has_z && std::fabs(z) < 3.0;
      const Rgb col = std::isnan(lift) ? Rgb{238, 240, 243} : diverging(ratio_pos(lift));
      std::string tip = strfmt("E%d × ", e) + m.labels[l] + " · lift " + fmt_num(lift, 3);
      if (has_z) tip += " · z " + fmt_num(z, 3) + (faint ? " (not significant)" : "");
      if (has_n) tip += " · " + fmt_num(m.label_count[l], 6) + " tokens labelled";
      const double x = ml + l * cw, y = mt + e * rh;
      o += "<rect x=\"" + px(x + 0.5) + "\" y=\"" + px(y + 0.5) + "\" width=\"" + px(cw - 1) +
           "\" height=\"" + px(rh - 1) + "\" fill=\"" + css(col) + "\"" +
           (faint ? " fill-opacity=\"0.3\"" : "") + "><title>" + html_escape(tip) +
           "</title></rect>";
      if (values && !std::isnan(lift)) {
        const bool dark = faint || light_background(col);
        o += "<text class=\"cell-value\" x=\"" + px(x + cw / 2) + "\" y=\"" + px(y + rh / 2 + 4) +
             "\" text-anchor=\"middle\" fill=\"" + (dark ? "#1f2937" : "#ffffff") + "\">" +
             (lift >= 9.95 ? strfmt("%.0f", lift) : strfmt("%.1f", lift)) + "</text>";
      }
    }
  }
  o += "</g>\n";
  const int every = std::max(1, static_cast<int>(std::ceil(12.0 / rh)));
  for (int e = 0; e < E; ++e) {
    if (e % every == 0)
      o += text_el(ml - 6, mt + e * rh + rh / 2 + 4, "tick", "end", strfmt("E%d", e));
    // The expert's strongest labels: lift >= 1.25, significant when z is known.
    std::vector<int> best;
    for (int l = 0; l < L; ++l) {
      const size_t i = static_cast<size_t>(l) * E + e;
      if (!(m.lift[i] >= 1.25) || (has_z && m.residual[i] < 3.0)) continue;
      best.push_back(l);
    }
    std::stable_sort(best.begin(), best.end(), [&](int a, int b) {
      return m.lift[static_cast<size_t>(a) * E + e] > m.lift[static_cast<size_t>(b) * E + e];
    });
    if (best.size() > 3) best.resize(3);
    if (rh < 13) continue;
    std::string s;
    for (int l : best)
      s += "<tspan class=\"top-label\">" + html_escape(truncate_label(m.labels[l], 12)) +
           "</tspan> " + fmt_num(m.lift[static_cast<size_t>(l) * E + e], 2) + "×   ";
    o += "<text class=\"top-labels\" x=\"" + px(ml + pw + 14) + "\" y=\"" +
         px(mt + e * rh + rh / 2 + 4) + "\">" +
         (s.empty() ? "<tspan class=\"muted\">—</tspan>" : s) + "</text>";
  }
  o += "<rect class=\"frame\" x=\"" + px(ml) + "\" y=\"" + px(mt) + "\" width=\"" + px(pw) +
       "\" height=\"" + px(ph) + "\"/>\n</svg>\n";
  return o;
}

std::string svg_ratio_legend(const std::string& caption, const std::string& note) {
  const double bx = 8 + 7.0 * static_cast<double>(caption.size()) + 14, bw = 260, W = 1160;
  std::string o = svg_open(W, 40, "legend-bar", caption);
  o += text_el(8, 20, "legend", "start", caption);
  o += "<g shape-rendering=\"crispEdges\">";
  const int n = 64;
  for (int i = 0; i < n; ++i) {
    const double t = -1.0 + 2.0 * (i + 0.5) / n;
    o += "<rect x=\"" + px(bx + bw * i / n) + "\" y=\"8\" width=\"" + px(bw / n + 0.5) +
         "\" height=\"14\" fill=\"" + css(diverging(t)) + "\"/>";
  }
  o += "</g><rect class=\"frame\" x=\"" + px(bx) + "\" y=\"8\" width=\"" + px(bw) +
       "\" height=\"14\"/>";
  for (int k = -2; k <= 2; ++k) {
    const double x = bx + bw * (k + 2) / 4.0;
    o += "<line class=\"axis\" x1=\"" + px(x) + "\" x2=\"" + px(x) + "\" y1=\"22\" y2=\"26\"/>";
    o += text_el(x, 37, "tick", "middle", ratio_label(k));
  }
  if (!note.empty()) {
    o += "<rect x=\"" + px(bx + bw + 24) +
         "\" y=\"8\" width=\"14\" height=\"14\" rx=\"2\" fill=\"" + css(diverging(0.75)) +
         "\" fill-opacity=\"0.3\"/><rect x=\"" + px(bx + bw + 40) +
         "\" y=\"8\" width=\"14\" height=\"14\" rx=\"2\" fill=\"" + css(diverging(-0.75)) +
         "\" fill-opacity=\"0.3\"/>";
    o += text_el(bx + bw + 62, 20, "legend", "start", note);
  }
  o += "</svg>\n";
  return o;
}

}  // namespace moe::report
