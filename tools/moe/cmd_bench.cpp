// `moe bench layer|decode|prefill`: speed against the machine's limits (src/bench). Each prints a
// summary to stdout, progress to stderr, and writes a Markdown report and a JSON file beside it.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "bench/ep_bench.h"
#include "bench/layer_bench.h"
#include "bench/model_bench.h"
#include "commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "io/mapped_file.h"
#include "model/config.h"

namespace moe {

namespace {

namespace fs = std::filesystem;

// "1,8,64" -> {1, 8, 64}; positive integers only.
std::vector<int> parse_counts(const std::string& text, const char* flag) {
  std::vector<int> out;
  if (text.empty()) fail("%s: the list is empty", flag);
  size_t i = 0;
  while (i <= text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string tok = text.substr(i, j - i);
    if (tok.empty() || tok.size() > 7 || tok.find_first_not_of("0123456789") != std::string::npos ||
        std::stol(tok) == 0)
      fail("%s: '%s' is not a positive integer (expected a list like 1,8,64,512)", flag,
           tok.c_str());
    out.push_back(static_cast<int>(std::stol(tok)));
    i = j + 1;
  }
  return out;
}

// Writes the report to `out` (Markdown) and its JSON beside it: X.md -> X.md + X.json, X.json ->
// X.md + X.json, anything else X -> X.md + X.json.
void write_reports(const std::string& out, const std::string& md, const std::string& json) {
  fs::path p(out);
  if (p.extension() == ".md" || p.extension() == ".json") p.replace_extension();
  const std::string md_path = p.string() + ".md", json_path = p.string() + ".json";
  if (p.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec) fail("--out: cannot create folder '%s': %s", p.parent_path().c_str(), ec.message().c_str());
  }
  write_file_atomic(md_path, md.data(), md.size());
  write_file_atomic(json_path, json.data(), json.size());
  std::fprintf(stderr, "moe bench: wrote %s and %s\n", md_path.c_str(), json_path.c_str());
}

void log_line(const std::string& s) { std::fprintf(stderr, "moe bench: %s\n", s.c_str()); }

// A model's short name: the config file's stem, or its folder's name for a config.json.
std::string model_name(const std::string& config_path) {
  const fs::path p = fs::absolute(config_path);
  const std::string stem = p.stem().string();
  return stem == "config" && p.has_parent_path() ? p.parent_path().filename().string() : stem;
}

std::string dir_name(const std::string& dir) {
  fs::path p = fs::absolute(dir);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

CommandRun cmd_bench_layer_register(CLI::App* app) {
  struct Opts {
    std::string config, type, tokens = "1,8,64,512", out;
    bool cold = false, warm = false, quick = false;
    int threads = 0;
    uint64_t seed = 1;
    double min_time = 1.0;
    int dot_max_tokens = -1;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--config", o->config, "config.json of the model (e.g. bench/configs/*.json)")
      ->required();
  app->add_option("--type", o->type, "expert storage: f32, bf16, q8_0 or q4_0")->required();
  app->add_option("--tokens", o->tokens, "token counts per call, comma-separated")
      ->capture_default_str();
  app->add_flag("--cold", o->cold, "only cold weights (from DRAM); default: cold and warm");
  app->add_flag("--warm", o->warm, "only warm weights (the same every call); default: both");
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  app->add_option("--out", o->out,
                  "report file (.md; the .json goes beside it) [bench/results/layer_<model>_<type>.md]");
  app->add_option("--seed", o->seed, "random seed of weights and inputs")->capture_default_str();
  app->add_option("--min-time", o->min_time, "seconds of timed calls per case")
      ->capture_default_str();
  app->add_option("--dot-max-tokens", o->dot_max_tokens,
                  "experts with at most this many tokens use the dot kernels, longer segments "
                  "dequantize for sgemm (-1 = the engine's default)")
      ->capture_default_str();
  app->add_flag("--quick", o->quick, "tiny machine probes and timing, for tests (not measurements)");
  return [o]() {
    QType t;
    if (!qtype_parse(o->type, &t)) fail("--type '%s': expected f32, bf16, q8_0 or q4_0", o->type.c_str());
    LayerBenchOptions opt;
    opt.type = t;
    opt.tokens = parse_counts(o->tokens, "--tokens");
    if (o->cold || o->warm) {
      opt.cold = o->cold;
      opt.warm = o->warm;
    }
    if (!(o->min_time >= 0.0)) fail("--min-time must be >= 0");
    opt.seed = o->seed;
    opt.min_time_s = o->min_time;
    opt.quick = o->quick;
    if (o->dot_max_tokens < -1) fail("--dot-max-tokens must be >= -1");
    opt.dot_max_tokens = o->dot_max_tokens;
    if (o->quick) {
      opt.min_time_s = std::min(opt.min_time_s, 0.01);
      opt.min_reps = 2;
      opt.bw_bytes = 16 << 20;
      opt.bw_reps = 2;
      opt.gemm_n = 128;
      opt.cold_target_bytes = 8 << 20;
    }
    opt.log = log_line;
    if (!file_exists(o->config)) fail("--config: '%s' does not exist", o->config.c_str());
    ModelConfig cfg;
    config_parse(&cfg, read_text_file(o->config), o->config);
    set_threads(o->threads);
    const std::string name = model_name(o->config);
    const LayerBenchResult r = layer_bench_run(cfg, name, o->config, opt);
    write_stdout(layer_bench_table(r));
    const std::string out =
        o->out.empty() ? "bench/results/layer_" + name + "_" + qtype_name(t) + ".md" : o->out;
    write_reports(out, layer_bench_markdown(r), layer_bench_json(r));
    return 0;
  };
}

namespace {

// Flags shared by `bench decode` and `bench prefill`.
struct ModelFlags {
  std::string model, out;
  int tokens = 0, threads = 0;
  uint64_t seed = 1;
  bool quick = false;
};

void add_model_flags(CLI::App* app, ModelFlags* f, const char* kind, const char* tokens_help) {
  app->add_option("--model", f->model, "checkpoint folder")->required();
  app->add_option("--tokens", f->tokens, tokens_help)->capture_default_str();
  app->add_option("--threads", f->threads, "threads (0 = all cores)")->capture_default_str();
  app->add_option("--seed", f->seed, "seed of the token ids")->capture_default_str();
  app->add_option("--out", f->out,
                  strfmt("report file (.md; the .json goes beside it) "
                         "[bench/results/%s_<model folder>.md]",
                         kind));
  app->add_flag("--quick", f->quick, "tiny machine probes, for tests (not measurements)");
}

// Checks the shared flags, applies --threads and returns the report path.
std::string start_model_bench(const ModelFlags& f, const char* kind) {
  if (f.tokens <= 0) fail("--tokens must be a positive integer");
  if (!file_exists(f.model)) fail("--model: '%s' does not exist", f.model.c_str());
  set_threads(f.threads);
  return f.out.empty() ? strfmt("bench/results/%s_%s.md", kind, dir_name(f.model).c_str()) : f.out;
}

}  // namespace

CommandRun cmd_bench_decode_register(CLI::App* app) {
  struct Opts : ModelFlags {
    int prompt = 4;
  };
  auto o = std::make_shared<Opts>();
  o->tokens = 64;
  add_model_flags(app, o.get(), "decode", "timed greedy decode steps");
  app->add_option("--prompt", o->prompt, "prompt tokens (random ids)")->capture_default_str();
  return [o]() {
    if (o->prompt <= 0) fail("--prompt must be a positive integer");
    const std::string out = start_model_bench(*o, "decode");
    DecodeBenchOptions opt;
    opt.tokens = o->tokens;
    opt.prompt = o->prompt;
    opt.seed = o->seed;
    opt.quick = o->quick;
    if (o->quick) {
      opt.bw_bytes = 16 << 20;
      opt.bw_reps = 2;
    }
    opt.log = log_line;
    const DecodeBenchResult r = decode_bench_run(o->model, opt);
    write_stdout(strfmt("decode: %.2f tokens/s, limit %.2f tokens/s (%.0f%%) at %.1f MB/token and "
                        "%.1f GB/s\n",
                        r.tok_s, r.limit_tok_s, 100.0 * r.frac, r.engine.total() / 1e6,
                        r.bw.best_gbps));
    write_reports(out, decode_bench_markdown(r), decode_bench_json(r));
    return 0;
  };
}

CommandRun cmd_bench_prefill_register(CLI::App* app) {
  struct Opts : ModelFlags {
    int reps = 2;
  };
  auto o = std::make_shared<Opts>();
  o->tokens = 512;
  add_model_flags(app, o.get(), "prefill", "tokens of the forward");
  app->add_option("--reps", o->reps, "timed forwards (after one untimed)")->capture_default_str();
  return [o]() {
    if (o->reps <= 0) fail("--reps must be a positive integer");
    const std::string out = start_model_bench(*o, "prefill");
    PrefillBenchOptions opt;
    opt.tokens = o->tokens;
    opt.reps = o->reps;
    opt.seed = o->seed;
    opt.quick = o->quick;
    if (o->quick) opt.gemm_n = 128;
    opt.log = log_line;
    const PrefillBenchResult r = prefill_bench_run(o->model, opt);
    write_stdout(strfmt("prefill: %d tokens in %.3f s: %.1f tokens/s, %.1f GFLOP/s (%.0f%% of sgemm)\n",
                        r.tokens, r.time.median_s, r.tok_s, r.gflops, 100.0 * r.frac_sgemm));
    write_reports(out, prefill_bench_markdown(r), prefill_bench_json(r));
    return 0;
  };
}

CommandRun cmd_bench_ep_register(CLI::App* app) {
  struct Opts {
    std::string config, type, tokens = "1,8,64,512", out;
    int threads = 1, reps = 20;
    uint64_t seed = 1;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--config", o->config, "config.json of the model (e.g. bench/configs/*.json)")
      ->required();
  app->add_option("--type", o->type, "expert storage: f32, bf16, q8_0 or q4_0")->required();
  app->add_option("--tokens", o->tokens, "tokens per rank per call, comma-separated")
      ->capture_default_str();
  app->add_option("--reps", o->reps, "timed calls per case")->capture_default_str();
  app->add_option("--threads", o->threads, "threads per rank (0 = all the rank's cores)")
      ->capture_default_str();
  app->add_option("--out", o->out, "report file (.md; the .json goes beside it) "
                  "[bench/results/ep_<model>_<type>_<ranks>.md]");
  app->add_option("--seed", o->seed, "random seed of weights and inputs")->capture_default_str();
  return [o]() {
    QType t;
    if (!qtype_parse(o->type, &t)) fail("--type '%s': expected f32, bf16, q8_0 or q4_0", o->type.c_str());
    EpBenchOptions opt;
    opt.type = t;
    opt.tokens = parse_counts(o->tokens, "--tokens");
    if (o->reps < 1) fail("--reps must be >= 1");
    opt.reps = o->reps;
    opt.seed = o->seed;
    if (!file_exists(o->config)) fail("--config: '%s' does not exist", o->config.c_str());
    ModelConfig cfg;
    config_parse(&cfg, read_text_file(o->config), o->config);
    set_threads(o->threads);
    const std::string name = model_name(o->config);
    Comm& comm = comm_ep();
    const EpBenchResult r = ep_bench_run(cfg, name, comm, opt);
    const std::string md = ep_bench_markdown(r);
    write_stdout(md);
    if (comm_world().rank() != 0) return 0;
    const std::string out = o->out.empty() ? strfmt("bench/results/ep_%s_%s_%d.md", name.c_str(),
                                                    qtype_name(t), r.P)
                                           : o->out;
    write_reports(out, md, ep_bench_json(r));
    return 0;
  };
}

}  // namespace moe
