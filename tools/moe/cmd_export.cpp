// `moe export`: a checkpoint as a GGUF file in llama.cpp's layout (model/gguf_export.h).
#include <cstdio>
#include <memory>

#include "commands.h"
#include "io/gguf.h"
#include "model/gguf_export.h"

namespace moe {

CommandRun cmd_export_register(CLI::App* app) {
  struct Opts {
    std::string model, gguf;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--model", o->model, "checkpoint folder (or .gguf) to read")->required();
  app->add_option("--gguf", o->gguf, "GGUF file to write")->required();
  return [o]() {
    Model m;
    model_load(&m, o->model);
    const bool tok = gguf_export(m, o->gguf, is_gguf_path(o->model) ? "" : o->model);
    std::fprintf(stderr, "moe export: wrote %s%s\n", o->gguf.c_str(),
                 tok ? " (with the tokenizer)" : " (no tokenizer.json: without a tokenizer)");
    return 0;
  };
}

}  // namespace moe
