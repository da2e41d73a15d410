// The markdown section of one experiment in docs/experiments.md: the setting, a table of every
// configuration (size, FLOPs, mean ± sd of the metrics over seeds) and the plot.
#include <algorithm>
#include <cmath>

#include "analysis/experiments.h"
#include "core/error.h"

namespace moe {

namespace {

std::string millions(double v) { return strfmt("%.2fM", v / 1e6); }

std::string pm(const MeanSd& m, const char* fmt) {
  if (m.n == 0) return "-";
  return strfmt(fmt, m.mean) + " ± " + strfmt(fmt, m.sd);
}

MeanSd metric(const ExpConfigResult& c, double ExpRunResult::*field) {
  std::vector<double> v;
  for (const ExpRunResult& s : c.seeds) v.push_back(s.*field);
  return mean_sd(v);
}

MeanSd gap(const ExpConfigResult& c) {
  std::vector<double> v;
  for (const ExpRunResult& s : c.seeds) v.push_back(s.final_val - s.train_tail);
  return mean_sd(v);
}

MeanSd spikes(const ExpConfigResult& c) {
  std::vector<double> v;
  for (const ExpRunResult& s : c.seeds) v.push_back(s.spikes);
  return mean_sd(v);
}

int diverged(const ExpConfigResult& c) {
  int n = 0;
  for (const ExpRunResult& s : c.seeds) n += s.diverged;
  return n;
}

const ExpConfigResult* find_config(const ExpResult& r, const std::string& name) {
  for (const ExpConfigResult& c : r.configs)
    if (c.name == name) return &c;
  return nullptr;
}

std::string horizon_cell(const ExpResult& r, const ExpConfigResult& c) {
  const ExpConfigResult* ref = find_config(r, r.reference);
  if (!ref) return "-";
  if (&c == ref) return "(reference)";
  const double s = experiment_overtake_step(c, *ref);
  return s < 0 ? strfmt("not within %d", r.steps) : strfmt("step %.0f", s);
}

std::vector<std::string> header_cells(const ExpResult& r) {
  std::vector<std::string> h = {"configuration", "parameters", "active", "forward FLOPs / token",
                                "validation loss"};
  if (r.metrics & EXP_METRIC_HORIZON) h.push_back("beats " + r.reference);
  if (r.metrics & EXP_METRIC_LOAD) h.push_back("max / mean load");
  if (r.metrics & EXP_METRIC_DROPPED) h.insert(h.end(), {"dropped", "loss with drops"});
  if (r.metrics & EXP_METRIC_LOGIT) h.insert(h.end(), {"max router logit", "loss spikes"});
  if (r.metrics & EXP_METRIC_GAP) h.insert(h.end(), {"train loss", "gap (val - train)"});
  if (r.metrics & EXP_METRIC_ACCEPT) h.insert(h.end(), {"MTP acceptance", "MTP draft accuracy"});
  h.push_back("diverged");
  return h;
}

std::vector<std::string> config_cells(const ExpResult& r, const ExpConfigResult& c) {
  std::vector<std::string> row = {c.name, millions(static_cast<double>(c.size.params)),
                                  millions(static_cast<double>(c.size.active)),
                                  millions(c.size.flops),
                                  pm(metric(c, &ExpRunResult::final_val), "%.4f")};
  if (r.metrics & EXP_METRIC_HORIZON) row.push_back(horizon_cell(r, c));
  if (r.metrics & EXP_METRIC_LOAD) row.push_back(pm(metric(c, &ExpRunResult::max_mean), "%.2f"));
  if (r.metrics & EXP_METRIC_DROPPED) {
    MeanSd d = metric(c, &ExpRunResult::dropped);
    d.mean *= 100, d.sd *= 100;
    row.push_back(d.n ? pm(d, "%.2f") + "%" : "-");
    row.push_back(pm(metric(c, &ExpRunResult::final_val_capacity), "%.4f"));
  }
  if (r.metrics & EXP_METRIC_LOGIT) {
    row.push_back(pm(metric(c, &ExpRunResult::max_logit), "%.2f"));
    row.push_back(pm(spikes(c), "%.1f"));
  }
  if (r.metrics & EXP_METRIC_GAP) {
    row.push_back(pm(metric(c, &ExpRunResult::train_tail), "%.4f"));
    row.push_back(pm(gap(c), "%.4f"));
  }
  if (r.metrics & EXP_METRIC_ACCEPT)
    for (double ExpRunResult::*f : {&ExpRunResult::mtp_accept, &ExpRunResult::mtp_draft_acc}) {
      MeanSd a = metric(c, f);
      a.mean *= 100, a.sd *= 100;
      row.push_back(a.n ? pm(a, "%.1f") + "%" : "-");
    }
  row.push_back(strfmt("%d of %zu", diverged(c), c.seeds.size()));
  return row;
}

std::string md_row(const std::vector<std::string>& cells) {
  std::string s = "|";
  for (const std::string& c : cells) s += " " + c + " |";
  return s + "\n";
}

}  // namespace

std::vector<std::vector<std::string>> experiment_table(const ExpResult& r) {
  std::vector<std::vector<std::string>> t = {header_cells(r)};
  for (const ExpConfigResult& c : r.configs) t.push_back(config_cells(r, c));
  return t;
}

// "A (x) < B (y) < ...", and whether the best is ahead of the second by more than both sds.
std::string experiment_ranking(const ExpResult& r) {
  std::vector<std::pair<double, const ExpConfigResult*>> v;
  for (const ExpConfigResult& c : r.configs) {
    const MeanSd m = metric(c, &ExpRunResult::final_val);
    if (m.n > 0) v.push_back({m.mean, &c});
  }
  if (v.empty()) return "Every run diverged.\n";
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string s = "Ranking by mean final validation loss (lower is better): ";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? " < " : "") + v[i].second->name + strfmt(" (%.4f)", v[i].first);
  s += ".";
  if (v.size() > 1) {
    const MeanSd a = metric(*v[0].second, &ExpRunResult::final_val);
    const MeanSd b = metric(*v[1].second, &ExpRunResult::final_val);
    const double d = v[1].first - v[0].first;
    s += strfmt(" The first leads the second by %.4f, which is %s their summed standard deviations "
                "(%.4f).", d, d > a.sd + b.sd ? "more than" : "within", a.sd + b.sd);
  }
  return s + "\n";
}

std::string experiment_markdown(const ExpResult& r, const std::string& svg_rel) {
  const size_t n_seeds = r.configs.empty() ? 0 : r.configs[0].seeds.size();
  std::string o = "## " + r.title + " (`" + r.name + "`)\n\n";
  o += "Claim: " + r.claim + "\n\n";
  if (r.quick)
    o += strfmt("**Quick mode** (`--quick`, %d steps per configuration): too few steps to test the "
                "claim; these numbers only show that the experiment runs.\n\n", r.steps);
  o += strfmt("Setting: %s; %d steps per configuration", r.mode_describe.c_str(), r.steps);
  if (r.base_steps > 0) o += strfmt(", after %d steps of each base model", r.base_steps);
  o += strfmt("; %zu seeds (mean ± sample sd). ", n_seeds);
  if (!r.common.empty()) o += "Flags common to every configuration: `" + r.common + "`. ";
  o += "Validation loss in nats/token (dropless); active parameters include the embeddings.\n\n";
  const std::vector<std::vector<std::string>> t = experiment_table(r);
  for (size_t i = 0; i < t.size(); ++i) {
    o += md_row(t[i]);
    if (i == 0) o += md_row(std::vector<std::string>(t[0].size(), "---"));
  }
  o += "\n" + experiment_ranking(r) + "\n";
  o += "Flags of each configuration:\n\n";
  for (const ExpConfigResult& c : r.configs)
    o += "- " + c.name + ": `" + (c.flags.empty() ? "(none)" : c.flags) + "` (" + c.size.shape + ")\n";
  o += "\n![Validation loss of " + r.name + ", mean over seeds](" + svg_rel + ")\n\n";
  o += "Reproduce: `moe experiment " + r.name + (r.quick ? " --quick" : "") +
       strfmt(" --seeds %zu`.\n", n_seeds);
  return o;
}

}  // namespace moe
