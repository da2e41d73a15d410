// Autoregressive generation through the KV cache.
//
// A GenSession owns the cache and the sampler. session_set_prompt makes the cache hold a prompt,
// reusing the longest prefix it already holds (so a chat's next turn only prefills what is new) and
// prefilling the rest in chunks; session_next samples a token and session_accept feeds it back.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/forward.h"
#include "infer/sampler.h"

namespace moe {

struct GenSession {
  const Model* m = nullptr;
  InferState st;
  Sampler sampler;
  std::vector<int32_t> tokens;  // what the cache holds, in order
  bool have_logits = false;     // st.logits[0..V) are the next-token logits
};

// ctx: cache capacity in tokens; chunk: most tokens per prefill forward call.
void session_init(GenSession* s, const Model& m, int ctx, int chunk, const SamplerParams& p);
void session_set_prompt(GenSession* s, const std::vector<int32_t>& prompt);
int32_t session_next(GenSession* s);
void session_accept(GenSession* s, int32_t id);

struct GenerateParams {
  int max_new = 16;
  bool stop_at_eos = true;  // stop after emitting one of stop_ids (it is included)
  std::vector<int32_t> stop_ids;  // defaults to the model's eos ids when empty
  SamplerParams sampler;
  const std::atomic<bool>* cancel = nullptr;  // checked before each new token
};

// Prefills `prompt`, then decodes one token at a time. Returns the generated ids only. on_token
// (may be empty) is called after each new token.
std::vector<int32_t> generate(const Model& m, const std::vector<int32_t>& prompt,
                              const GenerateParams& p,
                              const std::function<void(int32_t)>& on_token = {});

// The same, continuing an existing session (its cache is reused where the prompt allows).
std::vector<int32_t> session_generate(GenSession* s, const std::vector<int32_t>& prompt,
                                      const GenerateParams& p,
                                      const std::function<void(int32_t)>& on_token = {});

}  // namespace moe
