// Fuzz target: config.json (every model_type) and generation_config.json of a checkpoint folder,
// read by config_load, then written back by config_to_json and parsed again, and the tensor list
// the config implies. Input: config.json, kFuzzSep, generation_config.json.
#include "core/error.h"
#include "fuzz_util.h"
#include "model/config.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  std::vector<std::string> parts = fuzz::split_parts(data, size, 2);
  const std::string& dir = fuzz::scratch_dir();
  fuzz::write_scratch("config.json", parts[0]);
  if (!parts[1].empty()) fuzz::write_scratch("generation_config.json", parts[1]);
  try {
    ModelConfig cfg;
    config_load(&cfg, dir);
    std::vector<TensorSpec> specs = model_tensor_specs(cfg, false);
    std::vector<TensorSpec> fused = model_tensor_specs(cfg, true);
    (void)specs;
    (void)fused;
    ModelConfig back = cfg;
    std::string text = config_to_json(&back);
    ModelConfig again;
    config_parse(&again, text, dir + "/config.json (written back)");
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
