// Autoregressive generation through the KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infer/forward.h"
#include "infer/sampler.h"

namespace moe {

struct GenerateParams {
  int max_new = 16;
  bool stop_at_eos = true;  // stop after emitting an end-of-sequence id (it is included)
  SamplerParams sampler;
};

// Prefills `prompt` in one forward call, then decodes one token at a time. Returns the generated
// ids only. on_token (may be empty) is called after each new token.
std::vector<int32_t> generate(const Model& m, const std::vector<int32_t>& prompt,
                              const GenerateParams& p,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace moe
