// Inline-SVG chart primitives for the routing report (internal to src/analysis): colour scales,
// tick placement, number formatting, a line chart, a load heat map and a lift matrix. Every
// function returns a complete <svg> element (or a fragment where noted) with all text escaped.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "analysis/report_html.h"

namespace moe::report {

struct Rgb {
  double r = 0, g = 0, b = 0;  // 0..255
};
std::string css(Rgb c);  // "#rrggbb"
// Diverging blue - near-white - red scale for t in [-1, 1] (clamped); 0 is neutral.
Rgb diverging(double t);
// A distinct colour per expert: Tableau 10 / 20 for small E, spread hues beyond.
Rgb expert_colour(int e, int n_experts);
// Colour for line series i (layers, curves).
Rgb series_colour(int i);
// True if dark text reads better than white on c.
bool light_background(Rgb c);

// About `target` round tick values (1, 2, 5 x 10^k steps) covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target);
// A tick label: as many decimals as the tick spacing needs; 12000 -> "12k".
std::string tick_label(double v, double spacing);
// Compact number for tooltips and tables: integers in full with thousands separators ("12,345"),
// others with `sig` significant digits (no exponent for 1e-3..1e6).
std::string fmt_num(double v, int sig = 3);
// A rate in [0, 1] as a percentage: "12%", "5.0%", "0.25%".
std::string fmt_pct(double rate);
// A coordinate with one decimal.
std::string px(double v);

struct LineSeries {
  std::string name;
  Rgb colour;
  std::vector<double> x, y;  // x ascending; a non-finite y breaks the line
  double width = 2.0;
  double opacity = 1.0;
  bool markers = false;  // circles with tooltips at every point (keep for short series)
  bool legend = true;
  bool hover = true;  // include in the hover-strip tooltips
};

struct RefLine {
  double y = 0;
  std::string label;
  bool alert = false;  // red; otherwise neutral grey
};

struct LineChart {
  std::string aria;  // accessible name
  std::string x_label, y_label;
  int width = 1160, height = 320;
  std::vector<LineSeries> series;
  std::vector<RefLine> ref_lines;  // dashed horizontal lines
  bool y_from_zero = false;
};
std::string svg_line_chart(const LineChart& c);

// Load heat map of one layer: experts as rows, step buckets as columns (at most max_cols; a
// bucket sums the loads of its steps, then normalises).
std::string svg_load_heatmap(const LoadHeatmap& h, int width, int max_cols);

// Lift matrix: experts as rows, labels as columns, with each expert's strongest labels at the
// right.
std::string svg_lift_matrix(const LiftMatrix& m, int width);

// Horizontal legend bar for the diverging scale over log2 ratio in [-2, 2].
std::string svg_ratio_legend(const std::string& caption, const std::string& note);

}  // namespace moe::report
