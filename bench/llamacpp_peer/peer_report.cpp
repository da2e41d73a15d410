#include "peer_report.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"

namespace peer {

double target_ratio(int T) { return T == 1 ? 1.2 : 1.5; }

namespace {

std::string verdict(const CaseResult& k) {
  const double ratio = k.peer_us / k.moe_us, target = target_ratio(k.tokens);
  if (ratio >= target) return moe::strfmt("met (≥ %.1f×)", target);
  return moe::strfmt("missed: %.2f× < %.1f× (moe.cpp needs %.0f%% less time)", ratio, target,
                     100.0 * (1.0 - ratio / target));
}

std::string markdown(const Report& r) {
  const moe::MachineInfo& m = r.machine;
  std::string s = "# moe.cpp's MoE layer against llama.cpp's MoE FFN graph (faithful peer)\n\n";
  s += "`bench/llamacpp_peer/run.sh` (built and run by the script; `" + r.argv + "`).\n\n";
  s += "Peer: " + r.peer_desc + "\n\n";
  s += moe::strfmt("CPU: %s, %d CPUs, LLC %s; %s. Both sides %d threads (OpenMP, "
                   "OMP_WAIT_POLICY=%s), in one process, calls interleaved (moe.cpp, graph, "
                   "moe.cpp, ...), each timed alone; medians. Load average %.2f at the start, %.2f "
                   "at the end. %s.\n\n",
                   m.cpu.c_str(), m.cpus, moe::human_bytes(m.llc_bytes).c_str(), m.date.c_str(),
                   r.threads, r.omp_wait_policy.c_str(), r.load_start, r.load_end,
                   moe::bandwidth_markdown(r.bw).c_str());
  s += "Warm: the same weights every call, so what the caches hold of them they hold for both. "
       "Cold: before each timed call (untimed) the weights that call reads (router, shared expert, "
       "the selected experts) are evicted from every cache level with clflush, on both sides alike, "
       "so they come from DRAM as in decoding a model larger than the caches. Same weight bytes on "
       "both sides (ggml's copy "
       "repacked where its buffer type says so), same inputs; before timing, the selected experts, "
       "the combine weights and the outputs are compared (see bench/llamacpp_peer/llamacpp_peer.cpp)."
       "\n\n";
  s += report_table(r);
  s += "\nratio = graph median / moe.cpp median (> 1: moe.cpp faster). GB/s: bytes a call must "
       "read (distinct experts selected + router + shared expert) over the median; % BW: of the "
       "DRAM read bandwidth above. GFLOP/s: 2 x (routed assignments x 3 D F + T x 3 D Fs + T D E) "
       "over the median. Err: relative L2 difference of the two outputs (tolerance 5e-2). "
       "Others' CPU: other processes' share of the CPUs while the case was timed.\n\n";
  s += "Weight placement (ggml buffer type per tensor, chosen as llama.cpp chooses it):\n\n";
  for (const ModelResult& mr : r.models) {
    s += "- " + mr.model + " " + mr.type + ": ";
    for (size_t i = 0; i < mr.placement.size(); ++i) s += (i ? "; " : "") + mr.placement[i];
    s += moe::strfmt(" (%d rows dequantized bit-identically by ggml and moe.cpp)\n", mr.rows_checked);
  }
  return s;
}

nlohmann::json to_json(const Report& r) {
  using nlohmann::json;
  json j;
  j["bench"] = "llamacpp_peer";
  j["machine"] = moe::machine_json(r.machine, r.load_end, &r.bw, nullptr);
  j["threads"] = r.threads;
  j["load_start"] = r.load_start;
  j["load_end"] = r.load_end;
  j["omp_wait_policy"] = r.omp_wait_policy;
  j["peer"] = r.peer_desc;
  j["command"] = r.argv;
  j["results"] = json::array();
  for (const ModelResult& mr : r.models) {
    json mj = {{"model", mr.model}, {"type", mr.type}, {"placement", mr.placement},
               {"rows_checked", mr.rows_checked}, {"cases", json::array()}};
    for (const CaseResult& k : mr.cases)
      mj["cases"].push_back({{"tokens", k.tokens}, {"weights", k.cold ? "cold" : "warm"},
                             {"reps", k.reps},
                             {"moe_us_median", k.moe_us}, {"peer_us_median", k.peer_us},
                             {"moe_us_min", k.moe_us_min}, {"peer_us_min", k.peer_us_min},
                             {"ratio", k.peer_us / k.moe_us}, {"target", target_ratio(k.tokens)},
                             {"met", k.peer_us / k.moe_us >= target_ratio(k.tokens)},
                             {"bytes", k.bytes}, {"flops", k.flops},
                             {"experts_touched", k.experts_touched},
                             {"moe_gbps", k.bytes / k.moe_us * 1e-3},
                             {"peer_gbps", k.bytes / k.peer_us * 1e-3},
                             {"moe_gflops", k.flops / k.moe_us * 1e-3},
                             {"peer_gflops", k.flops / k.peer_us * 1e-3},
                             {"rel_err", k.rel_err}, {"tol", k.tol},
                             {"max_weight_diff", k.max_w_diff}, {"near_ties", k.near_ties},
                             {"other_cpu", k.others_cpu}});
    j["results"].push_back(mj);
  }
  return j;
}

}  // namespace

std::string report_table(const Report& r) {
  std::string t =
      "| model | type | T | weights | moe.cpp µs | graph µs | ratio | target | moe.cpp GB/s (% BW) | graph "
      "GB/s (% BW) | moe.cpp GFLOP/s | graph GFLOP/s | err | reps | others' CPU |\n"
      "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  const double bw = r.bw.best_gbps > 0 ? r.bw.best_gbps : 1.0;
  for (const ModelResult& mr : r.models)
    for (const CaseResult& k : mr.cases) {
      const double ga = k.bytes / k.moe_us * 1e-3, gb = k.bytes / k.peer_us * 1e-3;
      t += moe::strfmt("| %s | %s | %d | %s | %.1f | %.1f | %.2f× | %s | %.1f (%.0f%%) | %.1f (%.0f%%) | "
                       "%.1f | %.1f | %.2g | %d | %.0f%% |\n",
                       mr.model.c_str(), mr.type.c_str(), k.tokens, k.cold ? "cold" : "warm", k.moe_us, k.peer_us,
                       k.peer_us / k.moe_us, verdict(k).c_str(), ga, 100.0 * ga / bw, gb,
                       100.0 * gb / bw, k.flops / k.moe_us * 1e-3, k.flops / k.peer_us * 1e-3,
                       k.rel_err, k.reps, 100.0 * k.others_cpu);
    }
  return t;
}

void write_report(const Report& r, const std::string& path) {
  const std::string md = markdown(r);
  const std::string js = to_json(r).dump(2) + "\n";
  std::string jpath = path;
  if (jpath.size() > 3 && jpath.compare(jpath.size() - 3, 3, ".md") == 0) jpath.resize(jpath.size() - 3);
  jpath += ".json";
  moe::write_file_atomic(path, md.data(), md.size());
  moe::write_file_atomic(jpath, js.data(), js.size());
}

}  // namespace peer
