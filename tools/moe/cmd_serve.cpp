// `moe serve`: the OpenAI-compatible HTTP server (serve/server.h), and `moe template`: the
// chat-template rendering of /apply-template from the command line.
#include <omp.h>

#include <fstream>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "io/mapped_file.h"
#include "serve/server.h"
#include "text/chat_template.h"

namespace moe {

CommandRun cmd_serve_register(CLI::App* app) {
  auto o = std::make_shared<ServeOptions>();
  auto threads = std::make_shared<int>(0);
  app->add_option("--model", o->model_dir, "checkpoint folder (tokenizer.json and "
                  "tokenizer_config.json beside it enable text and chat)")->required();
  app->add_option("--host", o->host, "address to bind")->capture_default_str();
  app->add_option("--port", o->port, "port (0: any free one, printed)")->capture_default_str();
  app->add_option("--parallel", o->parallel, "sequences decoded together (KV slots)")->capture_default_str();
  app->add_option("--ctx", o->ctx, "context per sequence in tokens (capped by the model's)")->capture_default_str();
  app->add_option("--chunk", o->chunk, "most prompt tokens prefilled per step")->capture_default_str();
  app->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY'");
  app->add_option("--threads", *threads, "threads (0 = all cores)")->capture_default_str();
  app->add_option("--max-queue", o->max_queue, "requests waiting for a slot before 429")->capture_default_str();
  app->add_option("--timeout", o->timeout, "seconds a request may take, queue included (0 = none)")
      ->capture_default_str();
  app->add_option("--max-body", o->max_body, "largest request body in bytes (413 beyond)")->capture_default_str();
  add_expert_cache_options(app, &o->expert_cache);
  return [o, threads]() {
    if (comm_world().size() > 1)
      fail("moe serve runs in one process; under mpirun, expert parallelism serves logits, "
           "generate, eval, inspect and train");
    set_threads(*threads);
    o->threads = *threads > 0 ? *threads : omp_get_num_procs();  // the scheduler thread uses the same
    if (o->chunk <= 0) fail("--chunk must be positive");
    return serve_run(*o);
  };
}

CommandRun cmd_template_register(CLI::App* app) {
  struct Opts {
    std::string config, messages, bos, eos;
    bool gen = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--tokenizer-config", o->config, "tokenizer_config.json with a chat_template")->required();
  app->add_option("--messages", o->messages, "JSON file: an OpenAI-style list of messages")->required();
  app->add_flag("--add-generation-prompt", o->gen, "end with the assistant turn's opening");
  app->add_option("--bos", o->bos, "bos_token text (overrides the config's)");
  app->add_option("--eos", o->eos, "eos_token text (overrides the config's)");
  return [o]() {
    ChatTemplate ct = chat_template_load(o->config);
    if (!o->bos.empty()) ct.special_tokens["bos_token"] = o->bos;
    if (!o->eos.empty()) ct.special_tokens["eos_token"] = o->eos;
    const nlohmann::ordered_json msgs =
        nlohmann::ordered_json::parse(read_text_file(o->messages), nullptr, false);
    if (msgs.is_discarded()) fail("%s: not valid JSON", o->messages.c_str());
    if (!msgs.is_array()) fail("%s: expected a JSON list of messages", o->messages.c_str());
    for (size_t i = 0; i < msgs.size(); ++i)
      if (!msgs[i].is_object() || !msgs[i].contains("role") || !msgs[i]["role"].is_string())
        fail("%s: messages[%zu]: expected an object with a string 'role'", o->messages.c_str(), i);
    const std::string text = chat_render(ct, msgs, o->gen);
    write_stdout(nlohmann::json{{"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    return 0;
  };
}

}  // namespace moe
