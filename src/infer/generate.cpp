#include "infer/generate.h"

#include <algorithm>

#include "core/error.h"

namespace moe {

void session_init(GenSession* s, const Model& m, int ctx, int chunk, const SamplerParams& p) {
  s->m = &m;
  infer_state_init(&s->st, m, std::max(1, std::min(chunk, ctx)), ctx);
  sampler_init(&s->sampler, p, m.cfg.vocab);
  s->tokens.clear();
  s->have_logits = false;
}

void session_set_prompt(GenSession* s, const std::vector<int32_t>& prompt) {
  if (prompt.empty()) fail("the prompt is empty");
  if (static_cast<int>(prompt.size()) > s->st.ctx)
    fail("the prompt has %zu tokens, more than the context of %d", prompt.size(), s->st.ctx);
  size_t keep = 0;
  while (keep < s->tokens.size() && keep < prompt.size() && s->tokens[keep] == prompt[keep]) ++keep;
  if (keep == prompt.size()) --keep;  // re-run the last token to get its logits
  s->tokens.resize(keep);
  s->st.pos = static_cast<int>(keep);
  s->have_logits = false;
  const int chunk = s->st.T_max;
  for (size_t i = keep; i < prompt.size(); i += chunk) {
    const int n = static_cast<int>(std::min(prompt.size() - i, static_cast<size_t>(chunk)));
    infer_forward(*s->m, &s->st, prompt.data() + i, n, false);
    s->tokens.insert(s->tokens.end(), prompt.begin() + i, prompt.begin() + i + n);
  }
  s->have_logits = true;
}

int32_t session_next(GenSession* s) {
  MOE_CHECK(s->have_logits);
  return sampler_next(&s->sampler, s->st.logits.data(), s->m->cfg.vocab);
}

void session_accept(GenSession* s, int32_t id) {
  infer_forward(*s->m, &s->st, &id, 1, false);
  s->tokens.push_back(id);
  s->have_logits = true;
}

std::vector<int32_t> session_generate(GenSession* s, const std::vector<int32_t>& prompt,
                                      const GenerateParams& p,
                                      const std::function<void(int32_t)>& on_token) {
  if (p.max_new < 0) fail("-n must be >= 0");
  std::vector<int32_t> out;
  if (p.max_new == 0) return out;
  const std::vector<int32_t> stop =
      p.stop_ids.empty() ? std::vector<int32_t>(s->m->cfg.eos_ids.begin(), s->m->cfg.eos_ids.end())
                         : p.stop_ids;
  session_set_prompt(s, prompt);
  for (int i = 0; i < p.max_new; ++i) {
    if (p.cancel && p.cancel->load()) break;
    int32_t next = session_next(s);
    out.push_back(next);
    if (on_token) on_token(next);
    if (p.stop_at_eos && std::find(stop.begin(), stop.end(), next) != stop.end()) break;
    // A token is fed back only when another will be generated and the cache has room; the
    // session's token list always mirrors the cache.
    if (i + 1 == p.max_new || s->st.pos >= s->st.ctx) break;
    session_accept(s, next);
  }
  return out;
}

std::vector<int32_t> generate(const Model& m, const std::vector<int32_t>& prompt,
                              const GenerateParams& p, const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail("the prompt is empty");
  GenSession s;
  session_init(&s, m, static_cast<int>(prompt.size()) + std::max(p.max_new, 0),
               static_cast<int>(prompt.size()), p.sampler);
  return session_generate(&s, prompt, p, on_token);
}

}  // namespace moe
