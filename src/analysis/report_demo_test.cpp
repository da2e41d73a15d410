// A report with realistic fake data, built through the analysis functions (contingency tables ->
// specialisation -> lift matrices; loads -> summaries). It is also the driver of
// tests/report_browser_test.sh: with MOE_REPORT_DEMO_OUT=path the report is written there, and with
// MOE_REPORT_METRICS=metrics.jsonl the loss curves and heat maps come from a real training run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "analysis/report_html.h"
#include "analysis/routing_stats.h"
#include "test_util.h"

namespace moe {
namespace {

const std::vector<std::string> kPos = {"nn",  "in", "at",  "jj",  ".",   ",",   "nns", "cc",
                                       "rb",  "np", "vb",  "vbn", "vbd", "cs",  "pps", "ppo",
                                       "to",  "md", "cd",  "be",  "hvd", "wdt", "vbg", "ap",
                                       "pp$", "dt", "abn", "rp",  "ql",  "wps"};
const std::vector<std::string> kGenres = {
    "news",    "editorial",       "reviews",    "religion", "hobbies",
    "lore",    "belles_lettres",  "government", "learned",  "fiction",
    "mystery", "science_fiction", "adventure",  "romance",  "humor"};

// Synthetic training telemetry: a decaying loss, and loads where one expert of the first layer is
// hot early on and one expert of the last layer dies out.
void fake_metrics(ReportData* d, int n_layers, int E, int steps, std::mt19937* g) {
  std::normal_distribution<double> nd(0.0, 1.0);
  for (int s = 1; s <= steps; ++s) {
    const double base = 3.05 + 2.7 * std::exp(-s / 55.0);
    d->loss.train_step.push_back(s);
    d->loss.train_loss.push_back(base + 0.09 * nd(*g));
    if (s % 20 == 0 || s == steps) {
      d->loss.val_step.push_back(s);
      d->loss.val_loss.push_back(base + 0.06 + 0.01 * s / steps);
    }
  }
  for (int l = 0; l < n_layers; ++l) {
    LoadHeatmap h;
    h.layer = l;
    h.n_experts = E;
    for (int s = 1; s <= steps; ++s) {
      h.steps.push_back(s);
      for (int e = 0; e < E; ++e) {
        double w = 1.0 + 0.18 * nd(*g);
        if (l == 0 && e == 2) w *= 1.0 + 3.2 * std::exp(-s / 70.0);
        if (l == n_layers - 1 && e == E - 3) w *= std::max(0.0, 1.0 - s / (0.7 * steps));
        h.load.push_back(std::round(std::max(0.0, w) * 64));
      }
      h.dropped.push_back(0.0);
    }
    d->heat.push_back(h);
  }
}

// A label x expert table where each label leans towards one or two experts.
Contingency fake_table(const std::vector<double>& freq, int E, int layer, double strength,
                       std::mt19937* g) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const int L = static_cast<int>(freq.size());
  Contingency c = contingency_make(L, E);
  for (int l = 0; l < L; ++l) {
    const int p1 = (l * 3 + layer * 5) % E, p2 = (l * 7 + 1 + layer) % E;
    const double st = strength * (0.3 + 0.7 * ((l * 37 + layer * 11) % 10) / 9.0);
    std::vector<double> w(E, 1.0);
    w[p1] += st;
    w[p2] += 0.5 * st;
    double sum = 0;
    for (double v : w) sum += v;
    for (int e = 0; e < E; ++e)
      c.count[static_cast<size_t>(l) * E + e] =
          std::max(0.0, std::round(freq[l] * w[e] / sum * (1.0 + 0.08 * nd(*g))));
  }
  return c;
}

void fake_specialisation(ReportData* d, const std::vector<int>& layers, int E, std::mt19937* g) {
  std::vector<double> pos_freq, genre_freq;
  for (size_t i = 0; i < kPos.size(); ++i) pos_freq.push_back(60000.0 / std::pow(i + 1.5, 1.1));
  for (size_t i = 0; i < kGenres.size(); ++i) genre_freq.push_back(3000 + 900.0 * ((i * 7) % 11));
  for (size_t i = 0; i < layers.size(); ++i) {
    const int layer = layers[i];
    const double depth = 0.6 + static_cast<double>(i) / std::max<size_t>(1, layers.size() - 1);
    d->pos_lift.push_back(
        lift_matrix(specialisation(fake_table(pos_freq, E, layer, 2.4 * depth, g)), kPos,
                    "Layer " + std::to_string(layer) + " · POS tag"));
    d->genre_lift.push_back(
        lift_matrix(specialisation(fake_table(genre_freq, E, layer, 0.5 * depth, g)), kGenres,
                    "Layer " + std::to_string(layer) + " · genre"));
  }
}

void fake_sample(ReportData* d, const std::vector<int>& layers, int E) {
  const std::string text =
      "The jury said it did find that the city's Executive Committee, which had over-all charge "
      "of the election, deserves the praise and thanks of the City of Atlanta for the manner in "
      "which the election was conducted.";
  // Pseudo-BPE: words with their leading space; long words split in two.
  std::vector<std::string> toks;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    if (word.size() > 8) {
      const size_t cut = word.size() / 2 + 1;
      toks.push_back(word.substr(0, cut));
      toks.push_back(word.substr(cut));
    } else {
      toks.push_back(word);
    }
    word.clear();
  };
  for (char ch : text) {
    if (ch == ' ')
      flush(), word = " ";
    else if (ch == ',' || ch == '.' || ch == '\'')
      flush(), toks.push_back(std::string(1, ch));
    else
      word += ch;
  }
  flush();
  d->sample.tokens = toks;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::vector<int> row;
    for (size_t t = 0; t < toks.size(); ++t) {
      size_t h = std::hash<std::string>{}(toks[t]) + 31 * i;
      const bool punct =
          toks[t].size() == 1 && !std::isalpha(static_cast<unsigned char>(toks[t][0]));
      if (punct) h = 5 + i;  // punctuation shares an expert
      if (i > 0 && t % 4 == 0) h = std::hash<std::string>{}(toks[t]);  // some tokens keep theirs
      row.push_back(static_cast<int>(h % E));
    }
    d->sample.layers.push_back(layers[i]);
    d->sample.top1.push_back(row);
  }
}

TEST(ReportDemo, WritesRealisticReport) {
  std::mt19937 g(1234);
  ReportData d;
  d.title = "Routing report · tiny Brown MoE";
  std::string source = "synthetic telemetry";
  if (const char* m = std::getenv("MOE_REPORT_METRICS"); m && *m) {
    for (const std::string& w : report_load_metrics(&d, m, false)) d.notes.push_back(w);
    source = m;
  } else {
    fake_metrics(&d, 2, 8, 240, &g);
  }
  ASSERT_FALSE(d.heat.empty());
  const int E = d.heat[0].n_experts;
  std::vector<int> layers;
  for (const LoadHeatmap& h : d.heat) layers.push_back(h.layer);
  d.summary = summary_from_heat(d.heat, 10, d.alert_threshold);
  d.summary_note = "loads of the last 10 training steps (metrics.jsonl)";
  fake_specialisation(&d, layers, E, &g);
  fake_sample(&d, layers, E);
  d.facts = {
      {"model", "runs/tiny-brown"},
      {"MoE layers", std::to_string(layers.size())},
      {"experts", std::to_string(E) + " · top-2"},
      {"steps", std::to_string(static_cast<long long>(
                    d.loss.train_step.empty() ? 0 : d.loss.train_step.back()))},
      {"final val loss",
       d.loss.val_loss.empty() ? "n/a" : std::to_string(d.loss.val_loss.back()).substr(0, 5)},
      {"telemetry", source},
      {"specialisation data", "synthetic (demo)"}};
  std::string out;
  if (const char* o = std::getenv("MOE_REPORT_DEMO_OUT"); o && *o) out = o;
  const std::string dir = out.empty() ? moe_test::make_temp_dir("demo") : "";
  if (out.empty()) out = dir + "/report.html";
  report_write(out, d);
  EXPECT_TRUE(std::filesystem::exists(out));
  EXPECT_GT(std::filesystem::file_size(out), 10000u);
  if (!dir.empty()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moe
