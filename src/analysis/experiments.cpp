// Results of `moe experiment`: metrics.jsonl of each run, statistics over seeds, the raw numbers
// as JSON and the markdown section of docs/experiments.md.
#include "analysis/experiments.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/mapped_file.h"
#include "model/config.h"
#include "model/weights.h"

namespace moe {

namespace {

// The per-step telemetry of one metrics.jsonl line that the experiments use.
struct StepLine {
  double ce = NAN, max_mean = NAN, dropped = NAN, max_logit = NAN;
};

StepLine step_line(const nlohmann::json& j) {
  StepLine s;
  if (j.contains("ce") && j["ce"].is_number()) s.ce = j["ce"].get<double>();
  if (!j.contains("layers") || !j["layers"].is_array()) return s;
  double drop = 0.0;
  int n = 0;
  for (const auto& l : j["layers"]) {
    if (!l.is_object()) continue;
    if (l.contains("max_mean") && l["max_mean"].is_number())
      s.max_mean = std::isnan(s.max_mean) ? l["max_mean"].get<double>()
                                          : std::max(s.max_mean, l["max_mean"].get<double>());
    if (l.contains("dropped") && l["dropped"].is_number()) drop += l["dropped"].get<double>(), ++n;
    if (l.contains("max_logit") && l["max_logit"].is_number())
      s.max_logit = std::isnan(s.max_logit) ? l["max_logit"].get<double>()
                                            : std::max(s.max_logit, l["max_logit"].get<double>());
  }
  if (n) s.dropped = drop / n;
  return s;
}

double tail_mean(const std::vector<double>& v, int tail) {
  double s = 0.0;
  int n = 0;
  for (size_t i = v.size() > static_cast<size_t>(tail) ? v.size() - tail : 0; i < v.size(); ++i)
    if (std::isfinite(v[i])) s += v[i], ++n;
  return n ? s / n : NAN;
}

}  // namespace

ExpRunResult experiment_read_metrics(const std::string& path, int seed, int tail_steps) {
  ExpRunResult r;
  r.seed = seed;
  r.final_val = r.final_val_capacity = NAN;
  std::istringstream in(read_text_file(path));
  std::string line;
  std::vector<double> ce, max_mean, dropped;  // (steps)
  double max_logit = NAN;
  bool final_seen = false;
  for (int ln = 1; std::getline(in, line); ++ln) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer())
      fail("%s:%d: not a metrics line with an integer \"step\"", path.c_str(), ln);
    const int step = j["step"].get<int>();
    const bool has_val = j.contains("val_loss") && j["val_loss"].is_number();
    if (j.value("final", false)) {
      final_seen = true;
      r.steps = step;
      if (has_val) r.final_val = j["val_loss"].get<double>();
      if (j.contains("val_loss_capacity") && j["val_loss_capacity"].is_number())
        r.final_val_capacity = j["val_loss_capacity"].get<double>();
      continue;
    }
    const StepLine s = step_line(j);
    if (!ce.empty() && std::isfinite(s.ce) && std::isfinite(ce.back()) && s.ce > 1.05 * ce.back())
      ++r.spikes;
    ce.push_back(s.ce);
    max_mean.push_back(s.max_mean);
    dropped.push_back(s.dropped);
    if (std::isfinite(s.max_logit))
      max_logit = std::isnan(max_logit) ? s.max_logit : std::max(max_logit, s.max_logit);
    if (has_val) {
      r.val_step.push_back(step);
      r.val_loss.push_back(j["val_loss"].get<double>());
    }
    r.steps = step;
  }
  r.diverged = !final_seen;
  r.train_tail = tail_mean(ce, tail_steps);
  r.max_mean = tail_mean(max_mean, tail_steps);
  r.dropped = tail_mean(dropped, tail_steps);
  r.max_logit = max_logit;
  if (final_seen && std::isnan(r.final_val))
    fail("%s: the final line has no \"val_loss\"", path.c_str());
  return r;
}

void experiment_read_eval(const std::string& text, const std::string& what, ExpRunResult* r) {
  size_t at = text.rfind("\n{\n");
  at = at == std::string::npos ? (text.rfind("{\n", 0) == 0 ? 0 : at) : at + 1;
  if (at == std::string::npos) fail("%s: no JSON object from moe eval", what.c_str());
  const nlohmann::json j = nlohmann::json::parse(text.substr(at), nullptr, false);
  if (!j.is_object() || !j.contains("mean_ce"))
    fail("%s: the output of moe eval is not its JSON (field \"mean_ce\")", what.c_str());
  const auto num = [&](const char* key) -> double {
    if (!j.contains(key)) return NAN;
    if (!j[key].is_number()) fail("%s: field \"%s\" is not a number", what.c_str(), key);
    return j[key].get<double>();
  };
  r->mtp_accept = num("mtp_accept");
  r->mtp_draft_acc = num("mtp_draft_acc");
}

ExpSize experiment_size(const ModelConfig& c, int seq) {
  ExpSize z;
  int64_t embed = 0;
  for (const TensorSpec& t : model_tensor_specs(c, false)) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    z.params += n;
    if (t.name == "model.embed_tokens.weight") embed = n;
  }
  const int64_t D = c.hidden, F = c.expert_ffn;
  const int64_t per_expert = 3 * F * D + (c.expert_bias ? 2 * F + D : 0);
  z.active = z.params - static_cast<int64_t>(c.n_moe_layers()) * (c.n_experts - c.top_k) * per_expert;
  const double matrix = static_cast<double>(z.active - (c.tie_embeddings ? 0 : embed));
  z.flops = 2.0 * matrix + 2.0 * c.n_layers * c.n_heads * c.head_dim * (seq + 1.0);
  const bool dense = c.n_moe_layers() == 0;
  z.shape = strfmt("%d layers, d %d, ", c.n_layers, c.hidden) +
            (dense ? strfmt("dense FFN %d", c.dense_ffn)
                   : strfmt("%d x %d experts top-%d", c.n_experts, c.expert_ffn, c.top_k) +
                         (c.shared_ffn > 0 ? strfmt(" + shared %d", c.shared_ffn) : ""));
  return z;
}

MeanSd mean_sd(const std::vector<double>& v) {
  MeanSd m;
  double s = 0.0;
  for (double x : v)
    if (std::isfinite(x)) s += x, ++m.n;
  if (m.n == 0) return {NAN, NAN, 0};
  m.mean = s / m.n;
  double q = 0.0;
  for (double x : v)
    if (std::isfinite(x)) q += (x - m.mean) * (x - m.mean);
  m.sd = m.n > 1 ? std::sqrt(q / (m.n - 1)) : 0.0;
  return m;
}

void experiment_mean_curve(const ExpConfigResult& c, std::vector<double>* x, std::vector<double>* y) {
  x->clear();
  y->clear();
  if (c.seeds.empty()) return;
  for (size_t i = 0; i < c.seeds[0].val_step.size(); ++i) {
    const double step = c.seeds[0].val_step[i];
    std::vector<double> v;
    for (const ExpRunResult& s : c.seeds) {
      auto it = std::find(s.val_step.begin(), s.val_step.end(), step);
      v.push_back(it == s.val_step.end() ? NAN : s.val_loss[it - s.val_step.begin()]);
    }
    const MeanSd m = mean_sd(v);
    if (m.n != static_cast<int>(c.seeds.size())) continue;  // a seed diverged before this step
    x->push_back(step);
    y->push_back(m.mean);
  }
}

double experiment_overtake_step(const ExpConfigResult& c, const ExpConfigResult& ref) {
  std::vector<double> cx, cy, rx, ry;
  experiment_mean_curve(c, &cx, &cy);
  experiment_mean_curve(ref, &rx, &ry);
  for (size_t i = 0; i < cx.size(); ++i) {
    auto it = std::find(rx.begin(), rx.end(), cx[i]);
    if (it != rx.end() && cy[i] < ry[it - rx.begin()]) return cx[i];
  }
  return -1.0;
}

// ---- JSON --------------------------------------------------------------------------------------

namespace {

// NaN has no JSON form: null.
nlohmann::ordered_json num(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json();
}

double get_num(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return NAN;
  return j.at(key).get<double>();
}

}  // namespace

std::string experiment_to_json(const ExpResult& r) {
  nlohmann::ordered_json j;
  j["format"] = "moe-experiment";
  j["version"] = 1;
  j["name"] = r.name;
  j["title"] = r.title;
  j["claim"] = r.claim;
  j["quick"] = r.quick;
  j["steps"] = r.steps;
  j["base_steps"] = r.base_steps;
  j["mode_flags"] = r.mode_flags;
  j["mode"] = r.mode_describe;
  j["common"] = r.common;
  j["metrics"] = r.metrics;
  j["reference"] = r.reference;
  nlohmann::ordered_json cs = nlohmann::ordered_json::array();
  for (const ExpConfigResult& c : r.configs) {
    nlohmann::ordered_json cj;
    cj["name"] = c.name;
    cj["flags"] = c.flags;
    cj["params"] = c.size.params;
    cj["active_params"] = c.size.active;
    cj["flops_per_token"] = c.size.flops;
    cj["shape"] = c.size.shape;
    nlohmann::ordered_json ss = nlohmann::ordered_json::array();
    for (const ExpRunResult& s : c.seeds)
      ss.push_back({{"seed", s.seed}, {"diverged", s.diverged}, {"steps", s.steps},
                    {"final_val", num(s.final_val)}, {"final_val_capacity", num(s.final_val_capacity)},
                    {"train_tail", num(s.train_tail)}, {"max_mean", num(s.max_mean)},
                    {"dropped", num(s.dropped)}, {"max_logit", num(s.max_logit)},
                    {"spikes", s.spikes}, {"mtp_accept", num(s.mtp_accept)},
                    {"mtp_draft_acc", num(s.mtp_draft_acc)}, {"val_step", s.val_step},
                    {"val_loss", s.val_loss}});
    cj["seeds"] = ss;
    cs.push_back(cj);
  }
  j["configs"] = cs;
  return j.dump(1) + "\n";
}

ExpResult experiment_from_json(const std::string& text, const std::string& what) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || j.value("format", "") != "moe-experiment")
    fail("%s: not a moe experiment file (field \"format\")", what.c_str());
  if (!j.contains("version") || j["version"] != 1)
    fail("%s: field \"version\": only version 1 is known", what.c_str());
  ExpResult r;
  const char* field = "name";
  try {
    r.name = j.at(field = "name").get<std::string>();
    r.title = j.at(field = "title").get<std::string>();
    r.claim = j.at(field = "claim").get<std::string>();
    r.quick = j.at(field = "quick").get<bool>();
    r.steps = j.at(field = "steps").get<int>();
    r.base_steps = j.at(field = "base_steps").get<int>();
    r.mode_flags = j.at(field = "mode_flags").get<std::string>();
    r.mode_describe = j.at(field = "mode").get<std::string>();
    r.common = j.at(field = "common").get<std::string>();
    r.metrics = j.at(field = "metrics").get<unsigned>();
    r.reference = j.at(field = "reference").get<std::string>();
    for (const auto& cj : j.at(field = "configs")) {
      ExpConfigResult c;
      c.name = cj.at(field = "name").get<std::string>();
      c.flags = cj.at(field = "flags").get<std::string>();
      c.size.params = cj.at(field = "params").get<int64_t>();
      c.size.active = cj.at(field = "active_params").get<int64_t>();
      c.size.flops = cj.at(field = "flops_per_token").get<double>();
      c.size.shape = cj.at(field = "shape").get<std::string>();
      for (const auto& sj : cj.at(field = "seeds")) {
        ExpRunResult s;
        s.seed = sj.at(field = "seed").get<int>();
        s.diverged = sj.at(field = "diverged").get<bool>();
        s.steps = sj.at(field = "steps").get<int>();
        s.final_val = get_num(sj, field = "final_val");
        s.final_val_capacity = get_num(sj, field = "final_val_capacity");
        s.train_tail = get_num(sj, field = "train_tail");
        s.max_mean = get_num(sj, field = "max_mean");
        s.dropped = get_num(sj, field = "dropped");
        s.max_logit = get_num(sj, field = "max_logit");
        s.spikes = sj.at(field = "spikes").get<int>();
        s.mtp_accept = get_num(sj, field = "mtp_accept");  // absent in older files: NaN
        s.mtp_draft_acc = get_num(sj, field = "mtp_draft_acc");
        s.val_step = sj.at(field = "val_step").get<std::vector<double>>();
        s.val_loss = sj.at(field = "val_loss").get<std::vector<double>>();
        if (s.val_step.size() != s.val_loss.size())
          fail("%s: field \"val_loss\": %zu values for %zu steps", what.c_str(), s.val_loss.size(),
               s.val_step.size());
        c.seeds.push_back(s);
      }
      r.configs.push_back(c);
    }
  } catch (const nlohmann::json::exception&) {
    fail("%s: field \"%s\" is missing or has the wrong type", what.c_str(), field);
  }
  return r;
}

std::string experiment_replace_section(const std::string& doc, const std::string& name,
                                       const std::string& section) {
  const std::string open = "<!-- experiment:" + name + " -->";
  const std::string close = "<!-- /experiment:" + name + " -->";
  const size_t a = doc.find(open);
  const size_t b = a == std::string::npos ? std::string::npos : doc.find(close, a);
  std::string body = open + "\n" + section + close;
  if (a == std::string::npos || b == std::string::npos) {
    std::string out = doc;
    if (!out.empty() && out.back() != '\n') out += '\n';
    if (!out.empty()) out += '\n';
    return out + body + "\n";
  }
  return doc.substr(0, a) + body + doc.substr(b + close.size());
}

}  // namespace moe
