// `moe inspect`: architecture summary, parameter counts and memory needs of a checkpoint; with
// --data, how its routers treat real tokens (load balance, drops, consistency, specialisation);
// with --report, all of it plus the training telemetry as one self-contained HTML file.
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "analysis/experiments.h"
#include "analysis/inspect_routing.h"
#include "commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "dist/placement.h"
#include "io/mapped_file.h"
#include "model/weights.h"
#include "text/gguf_tokenizer.h"

namespace moe {

namespace {

std::string layer_list(const std::vector<char>& flags, bool want) {
  std::string s;
  int n = static_cast<int>(flags.size());
  for (int i = 0; i < n;) {
    if (static_cast<bool>(flags[i]) != want) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < n && static_cast<bool>(flags[j + 1]) == want) ++j;
    if (!s.empty()) s += ",";
    s += j > i ? std::to_string(i) + "-" + std::to_string(j) : std::to_string(i);
    i = j + 1;
  }
  return s.empty() ? "none" : s;
}

std::string router_desc(const ModelConfig& c) {
  const RouterSpec& r = c.router;
  std::string s;
  if (r.topk_then_softmax) s = "top-k on logits, then softmax over the selected";
  else s = std::string(r.score == SCORE_SOFTMAX ? "softmax" : "sigmoid") + " scores, top-k";
  if (r.has_bias) s += "; router bias";
  if (r.has_correction_bias) s += "; selection-only correction bias";
  if (r.group == GROUP_MAX) s += strfmt("; group-limited (max) %d of %d groups", r.topk_group, r.n_group);
  if (r.group == GROUP_TOP2_SUM)
    s += strfmt("; group-limited (top-2 sum) %d of %d groups", r.topk_group, r.n_group);
  if (r.norm_topk) s += "; renormalised";
  if (r.scale != 1.0f) s += strfmt("; scaled by %g", r.scale);
  return s;
}

std::string human(double v) {
  if (v >= 1e9) return strfmt("%.2fB", v / 1e9);
  if (v >= 1e6) return strfmt("%.2fM", v / 1e6);
  if (v >= 1e3) return strfmt("%.1fK", v / 1e3);
  return strfmt("%.0f", v);
}

// Parameters a token uses: all but the routed experts it is not sent to.
int64_t active_params(const Model& m) {
  const ModelConfig& c = m.cfg;
  const int64_t D = c.hidden, F = c.expert_ffn;
  const int64_t per_expert = 3 * F * D + (c.expert_bias ? 2 * F + D : 0);
  return m.n_params -
         static_cast<int64_t>(c.n_moe_layers()) * (c.n_experts - c.top_k) * per_expert;
}

std::string arch_facts(const Model& m) {
  const ModelConfig& c = m.cfg;
  return strfmt("%s, %d layers (%d MoE), %d experts, top-%d", arch_name(c.arch), c.n_layers,
                c.n_moe_layers(), c.n_experts, c.top_k);
}

// Under expert parallelism: each rank's block of experts and how many bytes of expert weights it
// holds in memory after routing the data (pages of this process, dist/placement.h). Appends a
// table to *text.
nlohmann::ordered_json ep_ranks_json(const Model& m, std::string* text) {
  Comm& ep = comm_ep();
  const int P = ep.size(), E = m.cfg.n_experts;
  const ExpertMemory mem = model_expert_memory(m);
  const int64_t mine[3] = {ep_expert_begin(E, P, ep.rank()), ep_expert_begin(E, P, ep.rank() + 1),
                           mem.resident};
  std::vector<int64_t> all(3 * static_cast<size_t>(P)), bytes(P, sizeof mine);
  ep.allgatherv(mine, sizeof mine, all.data(), bytes.data());
  nlohmann::ordered_json j;
  j["ranks"] = P;
  j["expert_bytes"] = mem.stored;
  j["per_rank"] = nlohmann::ordered_json::array();
  *text += strfmt("\nexpert parallel over %d ranks: %.2f MiB of expert weights in all\n", P,
                  mem.stored / 1048576.0);
  for (int r = 0; r < P; ++r) {
    const int64_t* v = all.data() + 3 * r;
    const double share = mem.stored ? static_cast<double>(v[2]) / mem.stored : 0.0;
    j["per_rank"].push_back({{"rank", r}, {"experts", {v[0], v[1]}},
                             {"resident_expert_bytes", v[2]}, {"resident_share", share}});
    *text += strfmt("  rank %d: experts %lld-%lld, %.2f MiB resident (%.1f%%)\n", r,
                    static_cast<long long>(v[0]), static_cast<long long>(v[1] - 1),
                    v[2] / 1048576.0, 100.0 * share);
  }
  return j;
}

// experiments.html beside the report, from the experiment results in dir, and its link.
void write_experiments_page(const std::string& dir, const std::string& report_path, ReportData* r) {
  const std::vector<ExpResult> rs = experiments_load_dir(dir);
  if (rs.empty())
    fail("%s: no experiment results (NAME.json files written by moe experiment)", dir.c_str());
  const std::string html = experiments_html(rs);
  const std::string path =
      (std::filesystem::path(report_path).parent_path() / "experiments.html").string();
  write_file_atomic(path, html.data(), html.size());
  r->pages.push_back({"Experiments", "experiments.html"});
  std::fprintf(stderr, "experiments: %s\n", path.c_str());
}

// The MoE's final validation loss beside its dense twin's (a `moe train --dense-twin` run in
// twin_dir, as scripts/run_main.sh --with-dense-twin trains it).
struct TwinFact {
  double moe = NAN, twin = NAN;
  int twin_ffn = 0;
  std::string text;
  nlohmann::ordered_json json;
};

TwinFact dense_twin_fact(const std::string& metrics, const std::string& twin_dir) {
  TwinFact f;
  if (metrics.empty() || !file_exists(metrics))
    fail("--dense-twin: the MoE's metrics.jsonl is missing (give --metrics)");
  ModelConfig tc;
  config_load(&tc, twin_dir);
  if (tc.n_moe_layers() > 0)
    fail("%s/config.json: --dense-twin needs a dense model (it has %d MoE layers)",
         twin_dir.c_str(), tc.n_moe_layers());
  f.twin_ffn = tc.dense_ffn;
  f.moe = experiment_read_metrics(metrics, 0, 10).final_val;
  f.twin = experiment_read_metrics(twin_dir + "/metrics.jsonl", 0, 10).final_val;
  if (!std::isfinite(f.moe)) fail("%s: no final validation loss (unfinished run?)", metrics.c_str());
  if (!std::isfinite(f.twin))
    fail("%s/metrics.jsonl: no final validation loss (unfinished run?)", twin_dir.c_str());
  const double d = f.twin - f.moe;
  f.text = strfmt("MoE %.4f, dense twin (FFN %d) %.4f: the MoE is %.4f %s", f.moe, f.twin_ffn,
                  f.twin, std::fabs(d), d > 0 ? "better" : "worse");
  f.json = {{"moe_val_loss", f.moe}, {"dense_twin_val_loss", f.twin},
            {"dense_twin_ffn", f.twin_ffn}, {"dense_twin", twin_dir}};
  return f;
}

template <class Opts>
int inspect_data(const Opts& o, const Model& m) {
  namespace fs = std::filesystem;
  if (o.io.capacity_factor < 0) fail("--capacity-factor must be >= 0");
  if (!(o.io.perturb >= 0)) fail("--perturb must be >= 0");
  if (!(o.io.threshold > 0)) fail("--alert must be positive");
  ReportData report;
  nlohmann::ordered_json J;
  J["model"] = o.model;
  J["params_total"] = m.n_params;
  J["params_active_per_token"] = active_params(m);
  if (!o.data.empty()) {
    Tokenizer tok;
    tokenizer_load_for_model(&tok, o.model, o.tokenizer);
    InspectData d;
    inspect_data_load(&d, o.data, tok, o.tokens, o.io.window);
    std::unique_ptr<Model> other;
    if (!o.compare.empty()) {
      other = std::make_unique<Model>();
      model_load(other.get(), o.compare);
    }
    InspectResult r = inspect_routing(m, tok, d, other.get(), o.io);
    if (!o.compare.empty()) r.json["compare"] = o.compare;
    for (auto& [k, v] : r.json.items()) J[k] = v;
    report = std::move(r.report);
    if (comm_ep().size() > 1) J["expert_parallel"] = ep_ranks_json(m, &r.text);
    if (!o.json) write_stdout(r.text);
  }
  std::string metrics = o.metrics;
  if (metrics.empty() && fs::exists(o.model + "/metrics.jsonl")) metrics = o.model + "/metrics.jsonl";
  if (comm_world().rank() != 0) return 0;  // rank 0 writes the files for every rank
  TwinFact twin;
  if (!o.dense_twin.empty()) {
    twin = dense_twin_fact(metrics, o.dense_twin);
    J["validation"] = twin.json;
    if (!o.json) write_stdout("validation loss: " + twin.text + "\n");
  }
  if (!o.report.empty()) {
    if (!metrics.empty()) {
      for (const std::string& w : report_load_metrics(&report, metrics, false))
        report.notes.push_back(w);
      if (o.data.empty()) {
        report.summary = summary_from_heat(report.heat, 10, o.io.threshold);
        report.summary_note = "the last 10 training steps of " + metrics;
      }
    }
    report.mtp_first = m.cfg.mtp_layers > 0 ? m.cfg.n_layers : -1;  // MTP blocks labelled
    report.title = "MoE routing report: " + fs::path(o.model).lexically_normal().string();
    const int64_t active = active_params(m);
    report.facts = {{"model", o.model},
                    {"architecture", arch_facts(m)},
                    {"parameters", human(static_cast<double>(m.n_params)) + " total, " +
                                       human(static_cast<double>(active)) +
                                       " active per token (~" +
                                       human(2.0 * static_cast<double>(active)) +
                                       " FLOPs per token forward)"}};
    if (!report.loss.val_loss.empty())
      report.facts.push_back({"final validation loss",
                              strfmt("%.4f nats/token (perplexity %.1f)", report.loss.val_loss.back(),
                                     std::exp(report.loss.val_loss.back()))});
    if (!o.dense_twin.empty()) report.facts.push_back({"against the dense twin", twin.text});
    if (!o.data.empty()) report.facts.push_back({"data", J["data"].get<std::string>()});
    if (!o.compare.empty()) report.facts.push_back({"compared with", o.compare});
    if (!metrics.empty()) report.facts.push_back({"telemetry", metrics});
    if (!o.experiments.empty()) write_experiments_page(o.experiments, o.report, &report);
    report_write(o.report, report);
    std::fprintf(stderr, "report: %s\n", o.report.c_str());
  }
  std::string json_out = o.json_out;
  if (json_out.empty() && !o.report.empty() && !o.data.empty()) {
    json_out = o.report;
    const size_t dot = json_out.rfind(".html");
    json_out = (dot != std::string::npos && dot + 5 == json_out.size() ? json_out.substr(0, dot)
                                                                       : json_out) +
               ".json";
  }
  const std::string js = J.dump(2) + "\n";
  if (!json_out.empty()) {
    write_file_atomic(json_out, js.data(), js.size());
    std::fprintf(stderr, "numbers: %s\n", json_out.c_str());
  }
  if (o.json) write_stdout(js);
  return 0;
}

}  // namespace

CommandRun cmd_inspect_register(CLI::App* app) {
  struct Opts {
    std::string model;
    bool json = false;
    std::string data, report, json_out, compare, metrics, tokenizer, experiments, dense_twin;
    int64_t tokens = 16384;
    InspectOptions io;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  app->add_flag("--json", o->json, "print the summary as JSON (with --data: the full numbers)");
  app->add_option("--data", o->data,
                  "route these tokens: a prepared data folder (its validation shard, with Brown "
                  "genre and part-of-speech labels) or a text file");
  app->add_option("--labels", o->data,
                  "same as --data: a prepared data folder whose shards carry the labels");
  app->add_option("--report", o->report,
                  "write the HTML report here (loss curves and load over training come from "
                  "--metrics)");
  app->add_option("--json-out", o->json_out,
                  "write the full numbers as JSON here (default with --report: REPORT with .json)");
  app->add_option("--compare", o->compare,
                  "a second checkpoint of the same architecture (e.g. an earlier snapshot): "
                  "routing consistency between the two");
  app->add_option("--metrics", o->metrics,
                  "training telemetry for the report (default: MODEL/metrics.jsonl if present)");
  app->add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: MODEL/tokenizer.json)");
  app->add_option("--experiments", o->experiments,
                  "with --report: draw the results of `moe experiment` in this folder (e.g. "
                  "docs/experiments) as experiments.html beside the report, linked from it");
  app->add_option("--dense-twin", o->dense_twin,
                  "a `moe train --dense-twin` run of this model: show its final validation loss "
                  "beside the MoE's (from --metrics)");
  app->add_option("--tokens", o->tokens, "most tokens to route")->capture_default_str();
  app->add_option("--window", o->io.window, "tokens per window (each from an empty cache)")
      ->capture_default_str();
  app->add_option("--capacity-factor", o->io.capacity_factor,
                  "capacity factor for the dropped-token rates (0 = dropless)")
      ->capture_default_str();
  app->add_option("--alert", o->io.threshold, "flag experts above this multiple of the mean load")
      ->capture_default_str();
  app->add_option("--perturb", o->io.perturb,
                  "relative embedding noise for the consistency check (0 = skip)")
      ->capture_default_str();
  app->add_option("--seed", o->io.seed, "seed of the perturbation")->capture_default_str();
  return [o]() {
    Model m;
    model_load(&m, o->model);
    if (!o->data.empty() || !o->report.empty()) return inspect_data(*o, m);
    TwinFact twin;
    if (!o->dense_twin.empty())
      twin = dense_twin_fact(o->metrics.empty() ? o->model + "/metrics.jsonl" : o->metrics,
                             o->dense_twin);
    const ModelConfig& c = m.cfg;
    const int64_t D = c.hidden;
    int64_t embed = static_cast<int64_t>(c.vocab) * D * (c.tie_embeddings && m.lm_head == m.embed ? 1 : 2);
    int64_t active = active_params(m);
    int64_t kv_per_token = c.mla ? static_cast<int64_t>(c.n_layers) * (c.kv_lora_rank + c.qk_rope_dim) * 4
                                 : static_cast<int64_t>(c.n_layers) * 2 * c.n_kv_heads * c.head_dim * 4;
    nlohmann::ordered_json j;
    j["model_type"] = arch_name(c.arch);
    j["layers"] = c.n_layers;
    j["moe_layers"] = layer_list(c.is_moe, true);
    j["dense_layers"] = layer_list(c.is_moe, false);
    j["hidden_size"] = c.hidden;
    j["vocab_size"] = c.vocab;
    j["attention"] = c.mla ? strfmt("MLA: %d heads, q_lora %d, kv_lora %d, nope %d, rope %d, v %d",
                                    c.n_heads, c.q_lora_rank, c.kv_lora_rank, c.qk_nope_dim,
                                    c.qk_rope_dim, c.v_head_dim)
                           : strfmt("GQA: %d query heads, %d kv heads, head_dim %d", c.n_heads,
                                    c.n_kv_heads, c.head_dim);
    j["rope"] = c.rope.type + strfmt(" (theta %g)", c.rope.theta);
    j["experts"] = c.n_experts;
    j["top_k"] = c.top_k;
    j["expert_ffn"] = c.expert_ffn;
    j["shared_expert_ffn"] = c.shared_ffn;
    j["router"] = router_desc(c);
    j["params_total"] = m.n_params;
    j["params_active_per_token"] = active;
    j["params_embedding"] = embed;
    j["weight_bytes"] = m.weight_bytes;
    j["kv_cache_bytes_per_token"] = kv_per_token;
    if (!o->dense_twin.empty()) j["validation"] = twin.json;
    if (o->json) {
      write_stdout(j.dump(2) + "\n");
      return 0;
    }
    std::string s;
    s += strfmt("model_type        %s\n", arch_name(c.arch));
    s += strfmt("layers            %d (MoE: %s; dense: %s)\n", c.n_layers,
                layer_list(c.is_moe, true).c_str(), layer_list(c.is_moe, false).c_str());
    s += strfmt("hidden / vocab    %d / %d\n", c.hidden, c.vocab);
    s += strfmt("attention         %s\n", j["attention"].get<std::string>().c_str());
    s += strfmt("rope              %s\n", j["rope"].get<std::string>().c_str());
    if (c.n_moe_layers() > 0) {
      s += strfmt("experts           %d routed x ffn %d, top-%d per token\n", c.n_experts,
                  c.expert_ffn, c.top_k);
      s += strfmt("shared experts    %s\n",
                  c.shared_ffn ? strfmt("ffn %d%s", c.shared_ffn, c.shared_gate ? " (sigmoid-gated)" : "").c_str()
                               : "none");
      s += strfmt("router            %s\n", router_desc(c).c_str());
    }
    s += strfmt("parameters        %s total, %s active per token (%s in embeddings)\n",
                human(static_cast<double>(m.n_params)).c_str(), human(static_cast<double>(active)).c_str(),
                human(static_cast<double>(embed)).c_str());
    s += strfmt("memory            %.2f MiB of weights as stored; KV cache %.1f KiB per token (fp32)\n",
                m.weight_bytes / 1048576.0, kv_per_token / 1024.0);
    if (!o->dense_twin.empty()) s += "validation loss   " + twin.text + "\n";
    write_stdout(s);
    return 0;
  };
}

}  // namespace moe
