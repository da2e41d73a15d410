// `moe logits` and `moe generate`.
#include <cmath>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "infer/forward.h"
#include "infer/generate.h"
#include "text/tokenizer.h"

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

}  // namespace

CommandRun cmd_logits_register(CLI::App* app) {
  struct Opts {
    std::string model, ids;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  app->add_option("--ids", o->ids, "comma-separated input token ids, e.g. 1,2,3")->required();
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  return [o]() {
    set_threads(o->threads);
    std::vector<int32_t> ids = parse_id_list(o->ids, "--ids");
    Model m;
    model_load(&m, o->model);
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
    std::string model, ids, prompt, tokenizer;
    int n = 16, threads = 0, top_k = 0;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 0;
    bool ignore_eos = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
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
  return [o, ids, prompt]() {
    set_threads(o->threads);
    if (ids->count() == 0 && prompt->count() == 0) fail("one of --ids or --prompt is required");
    GenerateParams p;
    p.max_new = o->n;
    p.stop_at_eos = !o->ignore_eos;
    p.sampler.temperature = o->temperature;
    p.sampler.top_k = o->top_k;
    p.sampler.top_p = o->top_p;
    p.sampler.seed = o->seed;
    if (ids->count()) {
      std::vector<int32_t> prompt_ids = parse_id_list(o->ids, "--ids");
      Model m;
      model_load(&m, o->model);
      std::vector<int32_t> out_ids = generate(m, prompt_ids, p);
      std::string out = "{\"ids\": ";
      append_ids_json(&out, out_ids);
      out += "}\n";
      write_stdout(out);
      return 0;
    }
    Tokenizer tok;
    tokenizer_load(&tok, o->tokenizer.empty() ? o->model + "/tokenizer.json" : o->tokenizer);
    if (o->prompt.empty()) fail("--prompt: the text is empty");
    std::vector<int32_t> prompt_ids = tokenizer_encode(tok, o->prompt, true);
    if (prompt_ids.empty()) fail("--prompt: the text encodes to no tokens");
    Model m;
    model_load(&m, o->model);
    DecodeStream ds;
    ds.skip_special = true;
    generate(m, prompt_ids, p, [&](int32_t id) {
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
