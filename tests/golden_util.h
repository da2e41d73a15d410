// A fixture's golden.safetensors (tests/fixtures/README.md) and the comparison the golden tests
// share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe_test {

struct Golden {
  std::vector<int32_t> ids;     // (T) prompt
  std::vector<int32_t> greedy;  // (N) greedy continuation
  std::vector<float> logits;    // (T, V)
  int T = 0, V = 0;
  float max_abs = 0.0f;         // max |logit|
};

// Reads DIR/golden.safetensors.
Golden load_golden(const std::string& dir);

float max_abs_diff(const float* a, const float* b, size_t n);

}  // namespace moe_test
