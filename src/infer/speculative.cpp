#include "infer/speculative.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace moe {

namespace {

// Everything one generate_mtp call holds.
struct SpecRun {
  const Model* m = nullptr;
  InferState st;
  Sampler greedy;
  int depth = 0;
  std::vector<std::vector<float>> hs;  // [depth + 1] (ctx, D) hidden states by depth, position
  std::vector<int> valid;              // [depth] positions of module k's cache with checked inputs
  std::vector<int32_t> tokens;         // checked tokens; the last is not in the main cache yet
  std::vector<int32_t> drafts;         // (depth) this step's guesses
  std::vector<int32_t> ids;            // (T_max) a module's input tokens, or the verified ones
};

// Module k over its positions from valid[k] to n - 1 (n = the pending token's position), whose
// input tokens are the checked ones and this step's earlier guesses; returns its guess.
int32_t draft_module(SpecRun* r, int k) {
  const ModelConfig& c = r->m->cfg;
  const int n = static_cast<int>(r->tokens.size()) - 1, lo = r->valid[k], cnt = n - lo;
  const int64_t D = c.hidden;
  for (int j = lo; j < n; ++j) {
    const int idx = j + k + 1;  // the token one past position j at depth k
    r->ids[j - lo] = idx <= n ? r->tokens[idx] : r->drafts[idx - n - 1];
  }
  infer_mtp_forward(*r->m, &r->st, k, r->hs[k].data() + lo * D, r->ids.data(), lo, cnt,
                    r->hs[k + 1].data() + lo * D);
  r->valid[k] = std::max(0, n - k);  // positions whose input tokens were all checked
  return sampler_next(&r->greedy, r->st.logits.data(), c.vocab);
}

}  // namespace

std::vector<int32_t> generate_mtp(const Model& m, const std::vector<int32_t>& prompt,
                                  const GenerateParams& p, int depth, SpecStats* stats,
                                  const std::function<void(int32_t)>& on_token) {
  const ModelConfig& c = m.cfg;
  if (c.mtp_layers <= 0)
    fail("%s: --speculative mtp needs MTP modules (num_nextn_predict_layers); this model has none",
         c.path.c_str());
  if (p.sampler.temperature != 0.0f) fail("--speculative mtp decodes greedily: use --temperature 0");
  if (depth < 0 || depth > c.mtp_layers) fail("--draft %d: the model has %d MTP modules", depth, c.mtp_layers);
  if (prompt.empty()) fail("the prompt is empty");
  if (p.max_new < 0) fail("-n must be >= 0");
  std::vector<int32_t> out;
  if (p.max_new == 0) return out;
  const std::vector<int32_t> stop =
      p.stop_ids.empty() ? std::vector<int32_t>(c.eos_ids.begin(), c.eos_ids.end()) : p.stop_ids;
  SpecRun r;
  r.m = &m;
  r.depth = depth > 0 ? depth : c.mtp_layers;
  const int P = static_cast<int>(prompt.size()), Dm = r.depth, V = c.vocab;
  const int ctx = P + p.max_new + Dm + 1;
  const int T_max = std::max(P, 4 * Dm + 4);  // the prompt, or a module's positions of a step
  const int64_t D = c.hidden;
  infer_state_init(&r.st, m, T_max, ctx);
  sampler_init(&r.greedy, SamplerParams{}, V);
  r.hs.assign(Dm + 1, std::vector<float>(static_cast<size_t>(ctx) * D, 0.0f));
  r.valid.assign(Dm, 0);
  r.tokens = prompt;
  r.drafts.assign(Dm, 0);
  r.ids.assign(T_max, 0);
  infer_forward(m, &r.st, prompt.data(), P, false);
  std::memcpy(r.hs[0].data(), r.st.h.data(), sizeof(float) * P * D);
  bool done = false;
  auto emit = [&](int32_t id) {
    out.push_back(id);
    r.tokens.push_back(id);
    if (on_token) on_token(id);
    done = static_cast<int>(out.size()) >= p.max_new ||
           (p.stop_at_eos && std::find(stop.begin(), stop.end(), id) != stop.end());
  };
  emit(sampler_next(&r.greedy, r.st.logits.data(), V));
  while (!done && !(p.cancel && p.cancel->load())) {
    const int n = static_cast<int>(r.tokens.size()) - 1;  // the pending token's position
    const int nd = std::min(Dm, p.max_new - static_cast<int>(out.size()) - 1);
    for (int k = 0; k < nd; ++k) r.drafts[k] = draft_module(&r, k);
    // One main forward over [pending, guesses]: row i's greedy token checks guess i.
    r.ids[0] = r.tokens[n];
    std::copy(r.drafts.begin(), r.drafts.begin() + nd, r.ids.begin() + 1);
    r.st.pos = n;
    infer_forward(m, &r.st, r.ids.data(), nd + 1, true);
    std::memcpy(r.hs[0].data() + n * D, r.st.h.data(), sizeof(float) * (nd + 1) * D);
    int acc = 0;
    int32_t next = sampler_next(&r.greedy, r.st.logits.data(), V);
    while (acc < nd && next == r.drafts[acc]) {
      ++acc;
      next = sampler_next(&r.greedy, r.st.logits.data() + static_cast<int64_t>(acc) * V, V);
    }
    if (stats) {
      stats->drafted += nd;
      stats->accepted += acc;
      ++stats->verify_forwards;
    }
    for (int i = 0; i < acc && !done; ++i) emit(r.drafts[i]);
    if (!done) emit(next);
    r.st.pos = n + acc + 1;  // the rejected guesses leave the cache
  }
  return out;
}

}  // namespace moe
