// Fuzz target: the safetensors header and tensor table (alone, then as a sharded checkpoint
// through its index) and a whole model load with config.json beside it.
// Input: config.json, generation_config.json, model.safetensors, model.safetensors.index.json
// (parts separated by kFuzzSep; a safetensors part starting with '{' is a header whose data section
// the harness fills with zeros, see fuzz_util.h). The shard an index names is the same safetensors
// part, written as "model-00001-of-00001.safetensors".
#include "core/error.h"
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  std::vector<std::string> parts = fuzz::split_parts(data, size, 4);
  const std::string& dir = fuzz::scratch_dir();
  const std::string st = fuzz::safetensors_bytes(parts[2]);
  fuzz::write_scratch("config.json", parts[0]);
  if (!parts[1].empty()) fuzz::write_scratch("generation_config.json", parts[1]);
  if (parts[3].empty()) {
    fuzz::write_scratch("model.safetensors", st);
  } else {
    fuzz::write_scratch("model.safetensors.index.json", parts[3]);
    fuzz::write_scratch("model-00001-of-00001.safetensors", st);
  }
  try {
    StArchive ar;
    st_open_dir(&ar, dir);
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  try {
    Model m;
    model_load(&m, dir);
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
