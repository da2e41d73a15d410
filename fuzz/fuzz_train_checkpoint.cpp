// Fuzz target: a training checkpoint (model.safetensors, optimizer.safetensors,
// trainer_state.json) resumed by checkpoint_load into a fixed small Qwen3-MoE training model
// (tests/fixtures/train/softmax_aux_z/config.json).
// Input: model.safetensors, kFuzzSep, optimizer.safetensors, kFuzzSep, trainer_state.json
// (safetensors parts starting with '{' are headers with zero data, see fuzz_util.h).
#include "core/error.h"
#include "fuzz_util.h"
#include "train/checkpoint.h"

namespace {

struct Fixed {
  moe::TrainModel tm;
  moe::AdamW opt;
  Fixed() {
    moe::ModelConfig cfg;
    moe::config_load(&cfg, moe::fuzz::source_path("tests/fixtures/train/softmax_aux_z"));
    moe::train_model_alloc(&tm, cfg, false);
    moe::adamw_init(&opt, tm, moe::AdamWParams{});
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  static Fixed fixed;
  std::vector<std::string> parts = fuzz::split_parts(data, size, 3);
  const std::string& dir = fuzz::scratch_dir();
  fuzz::write_scratch("model.safetensors", fuzz::safetensors_bytes(parts[0]));
  fuzz::write_scratch("optimizer.safetensors", fuzz::safetensors_bytes(parts[1]));
  fuzz::write_scratch("trainer_state.json", parts[2]);
  try {
    uint64_t seed = 0;
    checkpoint_load(&fixed.tm, &fixed.opt, dir, &seed);
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
