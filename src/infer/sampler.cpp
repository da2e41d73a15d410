#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace moe {

void sampler_init(Sampler* s, const SamplerParams& p, int vocab) {
  if (p.temperature < 0 || !std::isfinite(p.temperature)) fail("--temperature must be >= 0");
  if (p.top_k < 0) fail("--top-k must be >= 0");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("--top-p must be in (0, 1]");
  s->p = p;
  s->rng.seed(p.seed);
  s->prob.assign(vocab, 0.0f);
  s->order.assign(vocab, 0);
}

int32_t sampler_next(Sampler* s, const float* logits, int V) {
  if (s->p.temperature == 0.0f) {
    int32_t best = 0;
    for (int i = 1; i < V; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  float* prob = s->prob.data();
  int32_t* order = s->order.data();
  const float inv_t = 1.0f / s->p.temperature;
  float mx = logits[0] * inv_t;
  for (int i = 0; i < V; ++i) mx = std::max(mx, logits[i] * inv_t);
  for (int i = 0; i < V; ++i) prob[i] = std::exp(logits[i] * inv_t - mx);
  std::iota(order, order + V, 0);
  // Candidates, most probable first (stable: ties keep the lower id first).
  int n = V;
  if (s->p.top_k > 0 && s->p.top_k < V) n = s->p.top_k;
  std::partial_sort(order, order + n, order + V, [&](int32_t a, int32_t b) {
    return prob[a] > prob[b] || (prob[a] == prob[b] && a < b);
  });
  double kept = 0.0;
  for (int i = 0; i < n; ++i) kept += prob[order[i]];
  if (s->p.top_p < 1.0f) {
    double cum = 0.0;
    int m = 0;
    while (m < n) {
      cum += prob[order[m]] / kept;
      ++m;
      if (cum >= s->p.top_p) break;
    }
    n = m;
    kept = 0.0;
    for (int i = 0; i < n; ++i) kept += prob[order[i]];
  }
  const double u = static_cast<double>(s->rng() >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
  double target = u * kept, acc = 0.0;
  for (int i = 0; i < n; ++i) {
    acc += prob[order[i]];
    if (target < acc) return order[i];
  }
  return order[n - 1];
}

}  // namespace moe
