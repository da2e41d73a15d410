// `moe logits` and `moe generate`.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "infer/forward.h"
#include "infer/generate.h"
#include "infer/route_devices.h"
#include "io/mapped_file.h"
#include "moe/expert_cache.h"
#include "text/tokenizer.h"
#include "text/gguf_tokenizer.h"

namespace moe {

namespace {

void append_ids_json(std::string* out, const std::vector<int32_t>& ids) {
  *out += "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) *out += ", ";
    *out += std::to_string(ids[i]);
  }
  *out += "]";
}

void append_float(std::string* out, float v) {
  if (!std::isfinite(v)) {
    *out += "null";
    return;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  *out += buf;
}

// Time, page faults and bytes read from storage by this process (all threads) so far.
struct ProcSample {
  double t = 0;
  int64_t majflt = 0, minflt = 0;
  int64_t read_bytes = -1;  // /proc/self/io read_bytes; -1 where unavailable
  bool cached = false;      // the counters of the model's expert cache, when it has one
  ExpertCacheStats cache;
};

ProcSample proc_sample(const Model* m = nullptr) {
  ProcSample s;
  if (m && m->expert_cache) {
    s.cached = true;
    s.cache = m->expert_cache->stats;
  }
  s.t = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    s.majflt = ru.ru_majflt;
    s.minflt = ru.ru_minflt;
  }
  std::ifstream io("/proc/self/io");
  std::string key;
  int64_t v;
  while (io >> key >> v)
    if (key == "read_bytes:") s.read_bytes = v;
  return s;
}

nlohmann::ordered_json phase_json(const ProcSample& a, const ProcSample& b, int64_t tokens) {
  nlohmann::ordered_json j;
  j["tokens"] = tokens;
  j["seconds"] = b.t - a.t;
  j["major_faults"] = b.majflt - a.majflt;
  j["minor_faults"] = b.minflt - a.minflt;
  j["read_bytes"] = a.read_bytes < 0 || b.read_bytes < 0 ? -1 : b.read_bytes - a.read_bytes;
  if (tokens > 0 && b.t > a.t) j["tokens_per_s"] = tokens / (b.t - a.t);
  if (a.cached && b.cached) {  // the expert cache's counters over the phase
    const ExpertCacheStats &x = a.cache, &y = b.cache;
    j["cache_lookups"] = y.lookups - x.lookups;
    j["cache_hits"] = y.hits - x.hits;
    j["miss_expert_bytes"] = y.miss_bytes - x.miss_bytes;
    j["cache_read_bytes"] = y.read_bytes - x.read_bytes;
    j["prefetch_bytes"] = y.prefetch_bytes - x.prefetch_bytes;
    j["predicted_experts"] = y.pred_total - x.pred_total;
    j["predicted_hits"] = y.pred_hits - x.pred_hits;
  }
  return j;
}

// --stats: load, prefill and decode phases, and every decode step, as JSON.
void write_generate_stats(const std::string& path, size_t prompt_tokens,
                          const std::vector<ProcSample>& s, const ExpertCache* cache) {
  // s: before load, after load, then one sample after each generated token.
  nlohmann::ordered_json j;
  j["load"] = phase_json(s[0], s[1], 0);
  if (s.size() > 2) j["prefill"] = phase_json(s[1], s[2], static_cast<int64_t>(prompt_tokens));
  const int64_t steps = s.size() > 3 ? static_cast<int64_t>(s.size() - 3) : 0;
  if (steps > 0) {
    j["decode"] = phase_json(s[2], s.back(), steps);
    nlohmann::ordered_json per = nlohmann::ordered_json::array();
    for (size_t i = 3; i < s.size(); ++i) {
      const nlohmann::ordered_json p = phase_json(s[i - 1], s[i], 1);
      per.push_back({p["seconds"], p["major_faults"], p["read_bytes"]});
    }
    j["decode_steps"] = {{"columns", {"seconds", "major_faults", "read_bytes"}}, {"rows", per}};
  }
  if (cache) j["expert_cache"] = expert_cache_json(*cache);  // the whole run: prefill and decode
  const std::string txt = j.dump(2) + "\n";
  write_file_atomic(path, txt.data(), txt.size());
  if (steps > 0)
    std::fprintf(stderr, "stats: load %.2f s; decode %lld tokens in %.2f s = %.2f tokens/s, "
                 "%lld major faults, %.1f MB read from storage per token (%s)\n",
                 s[1].t - s[0].t, static_cast<long long>(steps), s.back().t - s[2].t,
                 steps / (s.back().t - s[2].t),
                 static_cast<long long>(s.back().majflt - s[2].majflt),
                 s[2].read_bytes < 0 ? -1.0 : (s.back().read_bytes - s[2].read_bytes) / 1e6 / steps,
                 path.c_str());
  if (cache) std::fprintf(stderr, "stats: %s\n", expert_cache_summary(*cache).c_str());
}

// --route-devices M / --devices D: DeepSeek-V2's device-limited routing at inference.
void add_route_devices_options(CLI::App* app, int* route_devices, int* devices) {
  app->add_option("--route-devices", *route_devices,
                  "device-limited routing: each token's experts from at most M devices, the "
                  "ranks under mpirun (0 = off)")->capture_default_str();
  app->add_option("--devices", *devices,
                  "expert groups standing for the devices of --route-devices in one process")
      ->capture_default_str();
}

}  // namespace

CommandRun cmd_logits_register(CLI::App* app) {
  struct Opts {
    std::string model, ids;
    int threads = 0;
    int route_devices = 0, devices = 0;
    ExpertCacheOptions cache;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  app->add_option("--ids", o->ids, "comma-separated input token ids, e.g. 1,2,3")->required();
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  add_route_devices_options(app, &o->route_devices, &o->devices);
  add_expert_cache_options(app, &o->cache);
  return [o]() {
    set_threads(o->threads);
    std::vector<int32_t> ids = parse_id_list(o->ids, "--ids");
    Model m;
    model_load(&m, o->model);
    infer_route_devices(&m.cfg, o->route_devices, o->devices);
    expert_cache_attach(&m, o->cache);
    const int T = static_cast<int>(ids.size()), V = m.cfg.vocab;
    InferState st;
    infer_state_init(&st, m, T, T);
    infer_forward(m, &st, ids.data(), T, true);
    std::string out;
    out.reserve(static_cast<size_t>(T) * V * 14 + 32);
    out += "{\"logits\": [";
    for (int t = 0; t < T; ++t) {
      out += t ? ", [" : "[";
      const float* row = st.logits.data() + static_cast<int64_t>(t) * V;
      for (int i = 0; i < V; ++i) {
        if (i) out += ", ";
        append_float(&out, row[i]);
      }
      out += "]";
    }
    out += "]}\n";
    write_stdout(out);
    return 0;
  };
}

CommandRun cmd_generate_register(CLI::App* app) {
  struct Opts {
    std::string model, ids, prompt, tokenizer, stats;
    int n = 16, threads = 0, top_k = 0;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 0;
    bool ignore_eos = false;
    int route_devices = 0, devices = 0;
    SpecOptions spec;
    ExpertCacheOptions cache;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  app->add_option("--speculative", o->spec.method, "speculative decoding: mtp (drafts from the model's MTP modules; greedy, same output)");
  app->add_option("--draft", o->spec.draft, "MTP modules that draft (0 = all)")->capture_default_str();
  app->add_flag("--compare-plain", o->spec.compare_plain, "also decode plainly: print both tokens/s, the speed-up and whether the outputs match");
  auto* ids = app->add_option("--ids", o->ids, "comma-separated prompt token ids; prints {\"ids\": [...]}");
  auto* prompt = app->add_option("--prompt", o->prompt, "prompt text; streams the generated text");
  ids->excludes(prompt);
  app->add_option("--tokenizer", o->tokenizer, "tokenizer.json for --prompt (default: MODEL/tokenizer.json)");
  app->add_option("-n,--max-new-tokens", o->n, "tokens to generate")->capture_default_str();
  app->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  app->add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")->capture_default_str();
  app->add_option("--top-p", o->top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
  app->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  app->add_flag("--ignore-eos", o->ignore_eos, "do not stop at end-of-sequence tokens");
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  app->add_option("--stats", o->stats,
                  "write timings, page faults and bytes read from storage (load, prefill, every "
                  "decode step; the expert cache's hit rate, bytes and prediction accuracy) to this "
                  "JSON file (with --ids)");
  add_route_devices_options(app, &o->route_devices, &o->devices);
  add_expert_cache_options(app, &o->cache);
  return [o, ids, prompt]() {
    set_threads(o->threads);
    if (ids->count() == 0 && prompt->count() == 0) fail("one of --ids or --prompt is required");
    if (!o->stats.empty() && ids->count() == 0) fail("--stats works with --ids only");
    GenerateParams p;
    p.max_new = o->n;
    p.stop_at_eos = !o->ignore_eos;
    p.sampler.temperature = o->temperature;
    p.sampler.top_k = o->top_k;
    p.sampler.top_p = o->top_p;
    p.sampler.seed = o->seed;
    if (ids->count()) {
      std::vector<int32_t> prompt_ids = parse_id_list(o->ids, "--ids");
      std::vector<ProcSample> samples;
      if (!o->stats.empty()) samples.push_back(proc_sample());
      Model m;
      model_load(&m, o->model);
      infer_route_devices(&m.cfg, o->route_devices, o->devices);
      expert_cache_attach(&m, o->cache);
      std::function<void(int32_t)> on_token;
      if (!o->stats.empty()) {
        samples.push_back(proc_sample(&m));
        on_token = [&samples, &m](int32_t) { samples.push_back(proc_sample(&m)); };
      }
      std::vector<int32_t> out_ids = generate_cli(m, prompt_ids, p, o->spec, on_token);
      if (!o->stats.empty()) write_generate_stats(o->stats, prompt_ids.size(), samples,
                                                      m.expert_cache.get());
      std::string out = "{\"ids\": ";
      append_ids_json(&out, out_ids);
      out += "}\n";
      write_stdout(out);
      return 0;
    }
    Tokenizer tok;
    tokenizer_load_for_model(&tok, o->model, o->tokenizer);
    if (o->prompt.empty()) fail("--prompt: the text is empty");
    std::vector<int32_t> prompt_ids = tokenizer_encode(tok, o->prompt, true);
    if (prompt_ids.empty()) fail("--prompt: the text encodes to no tokens");
    Model m;
    model_load(&m, o->model);
    infer_route_devices(&m.cfg, o->route_devices, o->devices);
    expert_cache_attach(&m, o->cache);
    DecodeStream ds;
    ds.skip_special = true;
    generate_cli(m, prompt_ids, p, o->spec, [&](int32_t id) {
      const std::string piece = decode_stream_step(tok, &ds, id);
      if (!piece.empty()) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    });
    write_stdout("\n");
    return 0;
  };
}

}  // namespace moe
