// Fuzz target: the HTTP request bodies of /v1/chat/completions and /v1/completions
// (parse_json_body, parse_generation_request: every field, chat messages rendered through a real
// chat template and tokenized), and /apply-template's messages. Input: one byte choosing the
// endpoint, then the body. ApiError (a 4xx reply) and MoeError are clean rejections.
#include "core/error.h"
#include "fuzz_util.h"
#include "serve/api_error.h"
#include "serve/request.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {

struct Ctx {
  moe::Tokenizer tok;
  moe::ChatTemplate tmpl;
  moe::RequestContext rc;
};

const Ctx& ctx() {
  static const Ctx* c = [] {
    auto* x = new Ctx;
    moe::tokenizer_load(&x->tok, moe::fuzz::source_path("tests/fixtures/tokenizers/qwen3/tokenizer.json"));
    x->tmpl = moe::chat_template_load(
        moe::fuzz::source_path("tests/fixtures/tokenizers/qwen3/tokenizer_config.json"));
    x->rc.tok = &x->tok;
    x->rc.tmpl = &x->tmpl;
    x->rc.vocab = moe::tokenizer_vocab_size(x->tok);
    x->rc.ctx = 512;
    return x;
  }();
  return *c;
}

}  // namespace

// Loads the tokenizer and template before fuzzing starts: libFuzzer's per-input timeout does not
// count this, while it would count a load done inside the first input (seconds under ASan on a
// loaded machine, reported as a false timeout). The replay main loads them lazily instead.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ctx();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  if (size < 1) return 0;
  const Ctx& c = ctx();
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    const nlohmann::json j = parse_json_body(body);
    switch (data[0] % 3) {
      case 0: parse_generation_request(j, true, c.rc); break;
      case 1: parse_generation_request(j, false, c.rc); break;
      default:
        if (j.contains("messages")) render_messages(j["messages"], c.rc, (data[0] & 0x80) != 0);
    }
  } catch (const ApiError&) {
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
