// `moe chat`: an interactive terminal chat through the checkpoint's chat template.
//
// Each turn renders the whole conversation with tokenizer_config.json's chat_template (as
// transformers' apply_chat_template does), tokenizes it without extra special tokens, and
// generates through a session whose KV cache keeps the conversation so far, so only the new turn
// is prefilled. Text streams as it is generated, never half a UTF-8 character. A reply stops at
// an end-of-sequence or end-of-turn token; Ctrl-C stops the reply, not the program; Ctrl-D, /exit
// or /quit leave; /reset starts over.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "infer/generate.h"
#include "io/mapped_file.h"
#include "moe/expert_cache.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "text/gguf_tokenizer.h"

namespace moe {

namespace {

std::atomic<bool> g_cancel{false};
void on_sigint(int) { g_cancel.store(true); }

// The chat template of a model folder, or of the file given.
ChatTemplate load_chat_template(const std::string& model_dir, const std::string& override_path) {
  if (override_path.empty() && is_gguf_path(model_dir)) {  // tokenizer.chat_template
    GgufFile g;
    gguf_open(&g, model_dir);
    return gguf_chat_template(g);
  }
  const std::string path =
      override_path.empty() ? model_dir + "/tokenizer_config.json" : override_path;
  if (!file_exists(path))
    fail("%s: not found; a chat needs tokenizer_config.json with a chat_template "
         "(or --tokenizer-config)", path.c_str());
  return chat_template_load(path);
}

}  // namespace

CommandRun cmd_chat_register(CLI::App* app) {
  struct Opts {
    std::string model, tokenizer, tokenizer_config, system;
    int n = 512, ctx = 4096, threads = 0, top_k = 0;
    float temperature = 0.7f, top_p = 0.95f;
    uint64_t seed = 0;
    ExpertCacheOptions cache;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder")->required();
  app->add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: MODEL/tokenizer.json)");
  app->add_option("--tokenizer-config", o->tokenizer_config,
                  "tokenizer_config.json with the chat_template (default: MODEL/tokenizer_config.json)");
  app->add_option("--system", o->system, "system prompt");
  app->add_option("-n,--max-new-tokens", o->n, "most tokens per reply")->capture_default_str();
  app->add_option("--ctx", o->ctx, "context length in tokens (capped by the model's)")->capture_default_str();
  app->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  app->add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")->capture_default_str();
  app->add_option("--top-p", o->top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
  app->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  app->add_option("--threads", o->threads, "threads (0 = all cores)")->capture_default_str();
  add_expert_cache_options(app, &o->cache);
  return [o]() {
    set_threads(o->threads);
    Tokenizer tok;
    tokenizer_load_for_model(&tok, o->model, o->tokenizer);
    ChatTemplate ct = load_chat_template(o->model, o->tokenizer_config);
    Model m;
    model_load(&m, o->model);
    expert_cache_attach(&m, o->cache);
    if (o->ctx <= 0) fail("--ctx must be positive");
    const int ctx = std::min(o->ctx, m.cfg.max_pos);
    GenSession session;
    SamplerParams sp;
    sp.temperature = o->temperature;
    sp.top_k = o->top_k;
    sp.top_p = o->top_p;
    sp.seed = o->seed;
    session_init(&session, m, ctx, 256, sp);
    GenerateParams gp;
    gp.stop_ids = chat_stop_ids(m.cfg.eos_ids, tok, &ct);
    gp.cancel = &g_cancel;
    struct sigaction sa = {};
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART;  // Ctrl-C at the prompt does not end the program
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    if (!o->system.empty()) messages.push_back({{"role", "system"}, {"content", o->system}});
    const size_t base = messages.size();
    std::fprintf(stderr, "moe chat: %s (%s). Ctrl-C stops a reply; Ctrl-D or /exit leaves.\n",
                 o->model.c_str(), arch_name(m.cfg.arch));
    std::string line;
    while (true) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
      g_cancel.store(false);
      if (!std::getline(std::cin, line)) break;
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        messages.erase(messages.begin() + static_cast<long>(base), messages.end());
        continue;
      }
      if (line.empty()) continue;
      messages.push_back({{"role", "user"}, {"content", line}});
      std::vector<int32_t> prompt;
      while (true) {
        prompt = tokenizer_encode(tok, chat_render(ct, messages, true), false);
        if (static_cast<int>(prompt.size()) < ctx || messages.size() <= base + 1) break;
        messages.erase(messages.begin() + static_cast<long>(base));  // forget the oldest turn
      }
      if (static_cast<int>(prompt.size()) >= ctx) {
        std::fprintf(stderr, "moe chat: the message needs %zu tokens, more than the context of %d\n",
                     prompt.size(), ctx);
        messages.erase(messages.end() - 1);
        continue;
      }
      gp.max_new = std::min(o->n, ctx - static_cast<int>(prompt.size()));
      DecodeStream ds;
      ds.skip_special = true;
      std::vector<int32_t> reply = session_generate(&session, prompt, gp, [&](int32_t id) {
        const std::string piece = decode_stream_step(tok, &ds, id);
        if (!piece.empty()) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        }
      });
      std::fputs(g_cancel.load() ? " [stopped]\n" : "\n", stdout);
      while (!reply.empty() && std::find(gp.stop_ids.begin(), gp.stop_ids.end(), reply.back()) != gp.stop_ids.end())
        reply.pop_back();
      messages.push_back({{"role", "assistant"}, {"content", tokenizer_decode(tok, reply, true)}});
    }
    std::fputs("\n", stdout);
    if (m.expert_cache)
      std::fprintf(stderr, "moe chat: %s\n",
                   expert_cache_summary(*m.expert_cache).c_str());
    return 0;
  };
}

}  // namespace moe
