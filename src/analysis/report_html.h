// The routing report: one self-contained HTML file (inline CSS and SVG, no scripts, no network,
// no external fonts; a Content-Security-Policy forbids any fetch) drawn from a plain ReportData.
//
// Sections: overview (facts and alerts), loss curves, per-layer load summary (with a load
// histogram and routing consistency), load heat maps (expert x training step, coloured by load
// relative to the mean), max/mean over training, expert x label lift matrices (POS tags, genres,
// frequent tokens), and a sample text coloured by each token's
// top-1 expert per layer. Every text goes through html_escape; every chart is inline SVG with
// <title> tooltips. A section without data says so instead of drawing an empty chart.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "analysis/routing_stats.h"

namespace moe {

struct LossCurves {
  std::vector<double> train_step, train_loss;  // same length
  std::vector<double> val_step, val_loss;      // same length
};

// Load of one MoE layer over training: row s holds the per-expert loads at steps[s] (token counts
// or fractions: each row is normalised when drawn). Rows that sum to 0 are drawn empty.
struct LoadHeatmap {
  int layer = 0;
  int n_experts = 0;
  std::vector<double> steps;    // (S)
  std::vector<double> load;     // (S*E) row-major
  std::vector<double> dropped;  // (S) dropped-assignment rate per step, NaN = not recorded
};

struct LayerSummary {
  int layer = 0;
  LoadStats load;
  std::vector<double> loads;   // (E) the loads themselves, drawn as a histogram
  double dropped_rate = -1.0;  // < 0 or NaN = not measured
  // Routing consistency (mean Jaccard overlap of the top-k sets, routing_consistency), < 0 = not
  // measured: under a small perturbation of the input, and against a second checkpoint.
  double consistency_perturb = -1.0;
  double consistency_ckpt = -1.0;
  std::vector<std::string> alerts;
};

// Rows are labels, columns experts. residual and label_count may be empty.
struct LiftMatrix {
  std::string title;                // e.g. "Layer 1 · POS tag"
  std::vector<std::string> labels;  // (L)
  int n_experts = 0;
  std::vector<double> lift;         // (L*E), NaN = undefined
  std::vector<double> residual;     // (L*E) adjusted standardized residuals, or empty
  std::vector<double> label_count;  // (L) tokens per label, or empty
  double cramers_v = -1.0;          // < 0 = not given
};

// One text routed through the model: per MoE layer, the top-1 expert of each token.
struct SampleRouting {
  std::vector<std::string> tokens;     // (T) token text as decoded
  std::vector<int> layers;             // (R) layer index of each row
  std::vector<std::vector<int>> top1;  // (R, T) expert, -1 = none
};

struct ReportData {
  std::string title = "MoE routing report";
  std::vector<std::pair<std::string, std::string>> facts;  // shown in the header, in order
  std::vector<std::string> notes;                          // warnings to show (e.g. bad lines)
  // Other pages linked from the header's navigation (label, relative href), e.g. the
  // experiments page (analysis/experiments.h).
  std::vector<std::pair<std::string, std::string>> pages;
  int n_experts = 0;                                       // 0 = take it from the data
  // Layers from this index on are multi-token-prediction modules' blocks (DeepSeek-V3 layout),
  // labelled "MTP k" beside their index; -1 = none.
  int mtp_first = -1;
  double alert_threshold = 3.0;                            // x mean, as in the summaries
  LossCurves loss;
  std::vector<LoadHeatmap> heat;
  std::vector<LayerSummary> summary;
  std::string summary_note;  // what the summaries cover, e.g. "last 10 training steps"
  std::vector<LiftMatrix> pos_lift, genre_lift, token_lift;
  SampleRouting sample;
};

// ---- Building blocks ---------------------------------------------------------------------------

// Summary row of a layer with alerts: hot experts (> threshold x mean), experts with no tokens,
// and a dropped rate above 1%.
LayerSummary layer_summary(int layer, const std::vector<double>& load, double dropped_rate,
                           double threshold = 3.0);
// Summaries from the last `last_steps` rows of each heat map (loads summed, dropped averaged).
std::vector<LayerSummary> summary_from_heat(const std::vector<LoadHeatmap>& heat, int last_steps,
                                            double threshold = 3.0);
// A lift matrix from a specialisation: labels with at least min_count tokens, most frequent first,
// at most max_rows of them.
LiftMatrix lift_matrix(const Specialisation& s, const std::vector<std::string>& labels,
                       const std::string& title, double min_count = 20.0, int max_rows = 40);

// Fills d->loss and d->heat from a metrics.jsonl written by `moe train` (replacing what was there).
// Missing fields are skipped (a line without "loss" adds no train point, one without "layers" no
// heat row); "final" lines add their validation loss. When steps go back (a resumed run), the later
// lines replace the earlier ones from that step on. A line that is not a JSON object, lacks an
// integer "step", or has a field of the wrong type is an error naming the file and line (MoeError),
// or with strict = false a warning; an unfinished last line (no newline) is always only a warning.
// Returns the warnings ("path:line: message").
std::vector<std::string> report_load_metrics(ReportData* d, const std::string& path,
                                             bool strict = true);

// "layer 4", or "layer 4 (MTP 1)" for an MTP module's block (d.mtp_first).
std::string report_layer_name(const ReportData& d, int layer);

// ---- Output ------------------------------------------------------------------------------------

// Escapes text for HTML content and attribute values (also inside inline SVG): & < > " ' become
// entities; invalid UTF-8 and control characters other than tab and newline become U+FFFD.
std::string html_escape(std::string_view s);

std::string report_html(const ReportData& d);
// The report's style sheet (also used by the experiments page, analysis/experiments.h).
const char* report_css();
// Writes report_html(d) to path atomically (temp file beside it, then rename).
void report_write(const std::string& path, const ReportData& d);

}  // namespace moe
