// Fuzz target: a GGUF file: header, metadata key-values, tensor infos and data offsets
// (gguf_parse), then the whole model load from it (architecture mapping, tensor names and types,
// tokenizer and chat template from the metadata). Input: the .gguf file byte for byte.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/gguf.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  try {
    GgufFile g;
    const std::string name = "fuzz.gguf";
    gguf_parse(&g, data, size, &name, true);
  } catch (const MoeError& e) {
    moe::fuzz::rejected(e);
    return 0;
  }
  const std::string& dir = fuzz::scratch_dir();
  fuzz::write_scratch("model.gguf", std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    Model m;
    model_load(&m, dir + "/model.gguf");
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
