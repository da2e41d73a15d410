#include "infer/generate.h"

#include <algorithm>

#include "core/error.h"

namespace moe {

std::vector<int32_t> generate(const Model& m, const std::vector<int32_t>& prompt,
                              const GenerateParams& p, const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail("the prompt is empty");
  if (p.max_new < 0) fail("-n must be >= 0");
  std::vector<int32_t> out;
  if (p.max_new == 0) return out;
  const int V = m.cfg.vocab;
  InferState st;
  infer_state_init(&st, m, static_cast<int>(prompt.size()), static_cast<int>(prompt.size()) + p.max_new);
  Sampler sampler;
  sampler_init(&sampler, p.sampler, V);
  out.reserve(p.max_new);
  infer_forward(m, &st, prompt.data(), static_cast<int>(prompt.size()), false);
  for (int i = 0; i < p.max_new; ++i) {
    int32_t next = sampler_next(&sampler, st.logits.data(), V);
    out.push_back(next);
    if (on_token) on_token(next);
    const auto& eos = m.cfg.eos_ids;
    if (p.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    if (i + 1 < p.max_new) infer_forward(m, &st, &next, 1, false);
  }
  return out;
}

}  // namespace moe
