// `moe eval`: perplexity of a checkpoint on held-out tokens and, with --ref, how far its
// next-token distributions are from a reference checkpoint's (quantization error).
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>

#include <nlohmann/json.hpp>

#include "analysis/inspect_routing.h"
#include "commands.h"
#include "core/error.h"
#include "infer/eval.h"
#include "io/mapped_file.h"
#include "train/dataset.h"
#include "text/gguf_tokenizer.h"

namespace moe {

CommandRun cmd_eval_register(CLI::App* app) {
  struct Opts {
    std::string model, data, ref, tokenizer;
    int64_t tokens = 0;
    int window = 512, threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  app->add_option("--data", o->data,
                  "a prepared data folder (meta.json + val.bin: its validation shard) or a text "
                  "file (encoded with --tokenizer)")
      ->required();
  app->add_option("--tokens", o->tokens, "most tokens to read from the data (0 = all)")
      ->capture_default_str();
  app->add_option("--window", o->window,
                  "tokens per window; each window starts from an empty cache and every position "
                  "is scored")
      ->capture_default_str();
  app->add_option("--ref", o->ref,
                  "reference checkpoint (e.g. the unquantized model): also report KL(ref || "
                  "model), max |delta logit|, top-1 agreement and the perplexity ratio");
  app->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json for a text file (default: MODEL/tokenizer.json)");
  app->add_flag("--json", o->json, "print the numbers as JSON");
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  return [o]() {
    if (o->window <= 0) fail("--window must be positive (got %d)", o->window);
    if (o->tokens < 0) fail("--tokens must be >= 0 (got %lld)", static_cast<long long>(o->tokens));
    set_threads(o->threads);
    if (!dataset_is_prepared(o->data)) {
      if (!file_exists(o->data))
        fail("--data %s: no such file or folder (expected a prepared data folder or a text file)",
             o->data.c_str());
      if (std::filesystem::is_directory(o->data))
        fail("--data %s: a folder without meta.json (expected a prepared data folder, e.g. "
             "RUN/data from moe train, or a text file)", o->data.c_str());
    }
    Tokenizer tok;
    if (!dataset_is_prepared(o->data))
      tokenizer_load_for_model(&tok, o->model, o->tokenizer);
    InspectData d;
    inspect_data_load(&d, o->data, tok,
                      o->tokens ? o->tokens : std::numeric_limits<int64_t>::max());
    Model m;
    model_load(&m, o->model);
    std::unique_ptr<Model> ref;
    if (!o->ref.empty()) {
      ref = std::make_unique<Model>();
      model_load(ref.get(), o->ref);
      if (ref->cfg.vocab != m.cfg.vocab)
        fail("--ref %s: vocab_size %d differs from --model %s's %d", o->ref.c_str(),
             ref->cfg.vocab, o->model.c_str(), m.cfg.vocab);
    }
    for (size_t i = 0; i < d.ids.size(); ++i)
      if (d.ids[i] >= m.cfg.vocab)
        fail("--data %s: token %zu is id %d, outside the model's vocabulary of %d (another "
             "tokenizer?)", o->data.c_str(), i, d.ids[i], m.cfg.vocab);
    if (d.ids.size() < 2) fail("--data %s: needs at least 2 tokens to score", o->data.c_str());
    const EvalStats r = eval_perplexity(m, d.ids, o->window, ref.get());
    MtpAcceptance mtp;  // self-speculative drafting by MTP module 1, on the same windows
    if (m.cfg.mtp_layers > 0) mtp = eval_mtp_acceptance(m, d.ids, o->window);

    nlohmann::ordered_json j;
    j["model"] = o->model;
    j["data"] = d.source;
    j["tokens"] = r.tokens;
    j["windows"] = r.windows;
    j["window"] = r.window;
    j["mean_ce"] = r.mean_ce;
    j["ppl"] = r.ppl;
    j["top1_acc"] = r.top1_acc;
    j["seconds"] = r.seconds;
    j["tokens_per_s"] = r.seconds > 0 ? r.tokens / r.seconds : 0.0;
    if (mtp.drafts > 0) {
      j["mtp_drafts"] = mtp.drafts;
      j["mtp_accept"] = mtp.accept;
      j["mtp_draft_acc"] = mtp.draft_acc;
    }
    if (r.has_ref) {
      j["ref"] = o->ref;
      j["ref_mean_ce"] = r.ref_mean_ce;
      j["ref_ppl"] = r.ref_ppl;
      j["ref_top1_acc"] = r.ref_top1_acc;
      j["ppl_ratio"] = r.ppl_ratio;
      j["mean_kl"] = r.mean_kl;
      j["max_kl"] = r.max_kl;
      j["max_abs_dlogit"] = r.max_abs_dlogit;
      j["mean_abs_dlogit"] = r.mean_abs_dlogit;
      j["top1_agree"] = r.top1_agree;
    }
    if (o->json) {
      write_stdout(j.dump(2) + "\n");
      return 0;
    }
    std::string s;
    s += strfmt("model          %s\n", o->model.c_str());
    s += strfmt("data           %s\n", d.source.c_str());
    s += strfmt("scored         %lld tokens in %lld window(s) of up to %d, each from an empty cache\n",
                static_cast<long long>(r.tokens), static_cast<long long>(r.windows), r.window);
    s += strfmt("cross-entropy  %.5f nats/token   perplexity %.4f   top-1 accuracy %.2f%%\n",
                r.mean_ce, r.ppl, 100.0 * r.top1_acc);
    if (r.has_ref) {
      s += strfmt("reference      %s: cross-entropy %.5f   perplexity %.4f   top-1 accuracy %.2f%%\n",
                  o->ref.c_str(), r.ref_mean_ce, r.ref_ppl, 100.0 * r.ref_top1_acc);
      s += strfmt("vs reference   perplexity ratio %.5f (%+.3f%%)   KL(ref || model) mean %.3g, "
                  "max %.3g nats/token\n",
                  r.ppl_ratio, 100.0 * (r.ppl_ratio - 1.0), r.mean_kl, r.max_kl);
      s += strfmt("               |delta logit| max %.4g, mean %.3g   top-1 agreement %.3f%%\n",
                  r.max_abs_dlogit, r.mean_abs_dlogit, 100.0 * r.top1_agree);
    }
    if (mtp.drafts > 0)
      s += strfmt("MTP drafts     %.2f%% accepted by the main model's argmax, %.2f%% equal to the "
                  "text (%lld drafts)\n",
                  100.0 * mtp.accept, 100.0 * mtp.draft_acc, static_cast<long long>(mtp.drafts));
    s += strfmt("speed          %.0f tokens/s (model forward only)\n",
                r.seconds > 0 ? r.tokens / r.seconds : 0.0);
    write_stdout(s);
    return 0;
  };
}

}  // namespace moe
