// Token sampling: greedy at temperature 0, otherwise temperature, then top-k, then top-p (nucleus),
// then a draw from a seeded generator. The same seed gives the same tokens on every platform
// (mt19937_64 with our own uniform conversion, no implementation-defined distributions).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace moe {

struct SamplerParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
};

struct Sampler {
  SamplerParams p;
  std::mt19937_64 rng;
  std::vector<float> prob;      // (V)
  std::vector<int32_t> order;   // (V)
};

void sampler_init(Sampler* s, const SamplerParams& p, int vocab);

// Picks the next token from logits (V). Greedy ties go to the lower id.
int32_t sampler_next(Sampler* s, const float* logits, int V);

}  // namespace moe
