// report_load_metrics: metrics.jsonl (written by src/train/trainer.cpp) into ReportData.
#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/report_html.h"
#include "core/error.h"
#include "io/mapped_file.h"

namespace moe {

namespace {

using json = nlohmann::json;

struct LineError : std::runtime_error {
  explicit LineError(const std::string& m) : std::runtime_error(m) {}
};

struct ParsedLayer {
  int layer = 0;
  std::vector<double> load;
  double dropped = NAN;
};

struct ParsedLine {
  double step = 0;
  bool final = false;
  double loss = NAN, val = NAN;
  bool has_loss = false, has_val = false;
  std::vector<ParsedLayer> layers;
};

// A number field: absent or null -> false; a number -> true and *out; anything else -> error.
bool number_field(const json& j, const char* key, double* out) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_number()) throw LineError(strfmt("\"%s\" is not a number", key));
  *out = it->get<double>();
  return true;
}

ParsedLine parse_line(const json& j) {
  ParsedLine p;
  const auto st = j.find("step");
  if (st == j.end() || !st->is_number() || st->get<double>() != std::floor(st->get<double>()) ||
      st->get<double>() < 0)
    throw LineError("no integer \"step\"");
  p.step = st->get<double>();
  const auto fin = j.find("final");
  p.final = fin != j.end() && fin->is_boolean() && fin->get<bool>();
  p.has_loss = number_field(j, "loss", &p.loss);
  p.has_val = number_field(j, "val_loss", &p.val);
  const auto ls = j.find("layers");
  if (ls == j.end() || ls->is_null()) return p;
  if (!ls->is_array()) throw LineError("\"layers\" is not an array");
  for (size_t i = 0; i < ls->size(); ++i) {
    const json& l = (*ls)[i];
    if (!l.is_object()) throw LineError(strfmt("layers[%zu] is not an object", i));
    ParsedLayer pl;
    pl.layer = static_cast<int>(i);
    const auto li = l.find("layer");
    if (li != l.end()) {
      if (!li->is_number_integer() || li->get<int64_t>() < 0 || li->get<int64_t>() > 1000000)
        throw LineError(strfmt("layers[%zu].layer is not a layer index", i));
      pl.layer = li->get<int>();
    }
    number_field(l, "dropped", &pl.dropped);
    const auto ld = l.find("load");
    if (ld == l.end() || ld->is_null()) continue;  // a layer without loads adds no heat row
    if (!ld->is_array()) throw LineError(strfmt("layers[%zu].load is not an array", i));
    for (const json& v : *ld) {
      if (!v.is_number() || v.get<double>() < 0 || !std::isfinite(v.get<double>()))
        throw LineError(strfmt("layers[%zu].load holds a value that is not a count", i));
      pl.load.push_back(v.get<double>());
    }
    for (const ParsedLayer& q : p.layers)
      if (q.layer == pl.layer) throw LineError(strfmt("layer %d appears twice", pl.layer));
    p.layers.push_back(std::move(pl));
  }
  return p;
}

// Drops every point at step >= s.
void truncate_from(ReportData* d, double s) {
  auto cut = [s](std::vector<double>* steps, std::vector<double>* vals) {
    const size_t n = std::lower_bound(steps->begin(), steps->end(), s) - steps->begin();
    steps->resize(n);
    vals->resize(n);
  };
  cut(&d->loss.train_step, &d->loss.train_loss);
  cut(&d->loss.val_step, &d->loss.val_loss);
  for (LoadHeatmap& h : d->heat) {
    const size_t n = std::lower_bound(h.steps.begin(), h.steps.end(), s) - h.steps.begin();
    h.steps.resize(n);
    h.load.resize(n * h.n_experts);
    h.dropped.resize(n);
  }
}

}  // namespace

std::vector<std::string> report_load_metrics(ReportData* d, const std::string& path, bool strict) {
  const std::string text = read_text_file(path);
  d->loss = LossCurves{};
  d->heat.clear();
  std::vector<std::string> warnings;
  std::map<int, size_t> heat_of;  // layer -> index in d->heat
  double last_step = -1;          // last step of a non-final line
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const bool complete = nl != std::string::npos;
    std::string_view line(text.data() + pos, (complete ? nl : text.size()) - pos);
    pos = complete ? nl + 1 : text.size();
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty()) continue;
    const std::string where = strfmt("%s:%d: ", path.c_str(), line_no);
    auto problem = [&](const std::string& msg) {
      if (!complete) {
        warnings.push_back(where + msg + " (unfinished last line, skipped)");
        return;
      }
      if (strict) throw MoeError(where + msg);
      warnings.push_back(where + msg + " (line skipped)");
    };
    const json j = json::parse(line.begin(), line.end(), nullptr, false);
    if (j.is_discarded()) {
      problem("not valid JSON");
      continue;
    }
    if (!j.is_object()) {
      problem("not a JSON object");
      continue;
    }
    ParsedLine p;
    try {
      p = parse_line(j);
      for (const ParsedLayer& l : p.layers) {
        const auto it = heat_of.find(l.layer);
        if (it != heat_of.end() && d->heat[it->second].n_experts != static_cast<int>(l.load.size()))
          throw LineError(strfmt("layer %d has %zu experts, earlier lines %d", l.layer,
                                 l.load.size(), d->heat[it->second].n_experts));
      }
    } catch (const LineError& e) {
      problem(e.what());
      continue;
    } catch (const json::exception& e) {
      problem(e.what());
      continue;
    }
    if (p.final) {
      if (p.has_val && (d->loss.val_step.empty() || p.step > d->loss.val_step.back())) {
        d->loss.val_step.push_back(p.step);
        d->loss.val_loss.push_back(p.val);
      }
      continue;
    }
    if (p.step <= last_step) {
      warnings.push_back(where + strfmt("step %.0f comes again (a resumed run?): the lines from "
                                        "here replace the earlier ones from that step on",
                                        p.step));
      truncate_from(d, p.step);
    }
    last_step = p.step;
    if (p.has_loss) {
      d->loss.train_step.push_back(p.step);
      d->loss.train_loss.push_back(p.loss);
    }
    if (p.has_val) {
      d->loss.val_step.push_back(p.step);
      d->loss.val_loss.push_back(p.val);
    }
    for (ParsedLayer& l : p.layers) {
      auto it = heat_of.find(l.layer);
      if (it == heat_of.end()) {
        LoadHeatmap h;
        h.layer = l.layer;
        h.n_experts = static_cast<int>(l.load.size());
        d->heat.push_back(std::move(h));
        it = heat_of.emplace(l.layer, d->heat.size() - 1).first;
      }
      LoadHeatmap& h = d->heat[it->second];
      h.steps.push_back(p.step);
      h.load.insert(h.load.end(), l.load.begin(), l.load.end());
      h.dropped.push_back(l.dropped);
    }
  }
  std::sort(d->heat.begin(), d->heat.end(),
            [](const LoadHeatmap& a, const LoadHeatmap& b) { return a.layer < b.layer; });
  return warnings;
}

}  // namespace moe
