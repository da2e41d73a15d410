// `moe quantize` (a BF16 / Q8_0 / Q4_0 / Q4_K / Q5_K / Q6_K copy of a checkpoint) and `moe init` (a random-weight
// checkpoint of a config.json).
#include <cstdio>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "model/checkpoint_write.h"

namespace moe {

namespace {

std::string human_bytes(int64_t b) {
  const double v = static_cast<double>(b);
  if (v >= 1024.0 * 1024 * 1024) return strfmt("%.2f GiB", v / (1024.0 * 1024 * 1024));
  if (v >= 1024.0 * 1024) return strfmt("%.2f MiB", v / (1024.0 * 1024));
  return strfmt("%.1f KiB", v / 1024.0);
}

QType parse_type(const std::string& s, bool allow_f32) {
  QType t;
  if (!qtype_parse_written(s, &t) || (t == QT_F32 && !allow_f32))
    fail("--type '%s': expected %s", s.c_str(),
         allow_f32 ? "f32, bf16, q8_0, q4_0, q4_k, q5_k or q6_k"
                   : "bf16, q8_0, q4_0, q4_k, q5_k or q6_k");
  return t;
}

}  // namespace

CommandRun cmd_quantize_register(CLI::App* app) {
  struct Opts {
    std::string in, out, type;
    bool experts_only = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--in", o->in, "checkpoint folder to read")->required();
  app->add_option("--out", o->out, "new folder to write (must not exist)")->required();
  app->add_option("--type", o->type, "bf16, q8_0, q4_0, q4_k, q5_k or q6_k")->required();
  app->add_flag("--experts-only", o->experts_only,
                "convert only the routed experts (default: all weight matrices)");
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  return [o]() {
    const QType t = parse_type(o->type, false);
    set_threads(o->threads);
    CkptWriteStats st;
    ckpt_quantize(o->in, o->out, t, o->experts_only, &st);
    std::fprintf(stderr,
                 "moe quantize: %s -> %s (%.1f%%): %d of %d tensors stored as %s%s; %d unused "
                 "tensor(s) dropped; wrote %s\n",
                 human_bytes(st.bytes_in).c_str(), human_bytes(st.bytes_out).c_str(),
                 st.bytes_in ? 100.0 * st.bytes_out / st.bytes_in : 0.0, st.n_converted,
                 st.n_tensors, qtype_name(t), o->experts_only ? " (experts only)" : "",
                 st.n_dropped, o->out.c_str());
    return 0;
  };
}

CommandRun cmd_init_register(CLI::App* app) {
  struct Opts {
    std::string config, out, type = "f32";
    bool random = false, fused = false;
    uint64_t seed = 0;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--config", o->config, "config.json of the architecture")->required();
  app->add_flag("--random", o->random, "random weights (the only initialisation so far)");
  app->add_option("--out", o->out, "new folder to write (must not exist)")->required();
  app->add_option("--type", o->type, "f32, bf16, q8_0, q4_0, q4_k, q5_k or q6_k weight matrices")
      ->capture_default_str();
  app->add_option("--seed", o->seed, "random seed")->capture_default_str();
  app->add_flag("--fused", o->fused, "fused 3-D expert tensors (transformers 5 layout)");
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  return [o]() {
    if (!o->random) fail("init: --random is required (random weights are the only initialisation)");
    InitOptions opt;
    opt.type = parse_type(o->type, true);
    opt.seed = o->seed;
    opt.fused = o->fused;
    set_threads(o->threads);
    CkptWriteStats st;
    ckpt_init_random(o->config, o->out, opt, &st);
    std::fprintf(stderr,
                 "moe init: wrote %s: %d tensors, %s of weights (%d stored as %s, the "
                 "rest f32)\n",
                 o->out.c_str(), st.n_tensors, human_bytes(st.bytes_out).c_str(),
                 opt.type == QT_F32 ? st.n_tensors : st.n_converted, qtype_name(opt.type));
    return 0;
  };
}

}  // namespace moe
