// Self-speculative greedy decoding with the model's own multi-token-prediction modules as the
// draft (DeepSeek-V3 report, section 5.4.3; vLLM's "deepseek_mtp" method).
//
// Each step the MTP modules, chained, guess the tokens after the pending one (module k guesses
// one more token ahead); the main model then runs the pending token and the guesses in ONE forward
// and keeps the guesses up to the first one its own greedy choice disagrees with, plus its own
// token after them. The rejected positions are dropped from the KV cache by moving its position
// back (the entries past it are overwritten later). Every emitted token is the main model's
// greedy choice given the tokens before it, so the output equals plain greedy decoding
// (generate() at temperature 0).
//
// Each module keeps its own cache (layer L + k) and the hidden states of every position, since a
// module at position j needs the previous depth's state at j; module k's positions whose input
// came from a guess are recomputed once the guess is checked.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infer/generate.h"

namespace moe {

struct SpecStats {
  int64_t drafted = 0;   // guesses verified
  int64_t accepted = 0;  // guesses the main model agreed with
  int64_t verify_forwards = 0;  // main-model forwards after the prompt's
  double acceptance() const { return drafted ? static_cast<double>(accepted) / drafted : 0.0; }
};

// Greedy generation (p.sampler.temperature must be 0) drafting with the first `depth` MTP modules
// (0 = all of them). Returns the generated ids only; stops as generate() does. Throws MoeError
// when the model has no MTP modules or the sampler is not greedy.
std::vector<int32_t> generate_mtp(const Model& m, const std::vector<int32_t>& prompt,
                                  const GenerateParams& p, int depth, SpecStats* stats,
                                  const std::function<void(int32_t)>& on_token = {});

}  // namespace moe
