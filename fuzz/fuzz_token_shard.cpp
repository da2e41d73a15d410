// Fuzz target: a prepared token-shard folder (meta.json, train.bin, val.bin) opened by
// dataset_open, then training batches and validation windows read from it.
// Input: meta.json, kFuzzSep, train.bin, kFuzzSep, val.bin.
#include <algorithm>

#include "core/error.h"
#include "fuzz_util.h"
#include "train/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  std::vector<std::string> parts = fuzz::split_parts(data, size, 3);
  const std::string& dir = fuzz::scratch_dir();
  fuzz::write_scratch("meta.json", parts[0]);
  fuzz::write_scratch("train.bin", parts[1]);
  fuzz::write_scratch("val.bin", parts[2]);
  try {
    Dataset d;
    dataset_open(&d, dir);
    constexpr int B = 2, T = 8;
    std::vector<int32_t> ids(B * T), targets(B * T);  // (B, T)
    for (int64_t step = 0; step < 3; ++step)
      dataset_train_batch(d, 1234, step, 0, B, T, ids.data(), targets.data());
    for (int w = 0; w < 4; ++w)
      if (!dataset_val_window(d, w, 4, T, ids.data(), targets.data())) break;
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
