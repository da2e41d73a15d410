// REINFORCE routing's score-function gradient; the estimator and its variance are described at
// router_reinforce_grad in router.h.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/router.h"

namespace moe {

double router_reinforce_grad(const Routing& r, const RouterSpec& spec, const float* adv,
                             float entropy, float grad_scale, float* dlogits) {
  MOE_CHECK(spec.kind == ROUTER_REINFORCE);
  const int N = r.N, E = r.E, K = r.K;
  if (N == 0) return 0.0;
  double h_sum = 0.0;
  for (int t = 0; t < N; ++t) {
    const float* p = r.score.data() + static_cast<int64_t>(t) * E;  // softmax policy
    const int32_t* drawn = r.expert.data() + static_cast<int64_t>(t) * K;
    double H = 0.0;
    for (int e = 0; e < E; ++e)
      if (p[e] > 0) H -= p[e] * std::log(static_cast<double>(p[e]));
    h_sum += H;
    if (!dlogits) continue;
    float* g = dlogits + static_cast<int64_t>(t) * E;
    // Entropy bonus -entropy/N * H: d/dlogit_j = entropy/N * p_j (log p_j + H).
    const double ce = static_cast<double>(entropy) / N;
    if (ce != 0.0)
      for (int e = 0; e < E; ++e)
        if (p[e] > 0)
          g[e] += static_cast<float>(grad_scale * ce * p[e] * (std::log(static_cast<double>(p[e])) + H));
    const double a = adv ? adv[t] : 0.0;
    if (a == 0.0) continue;
    // d log pi / dlogit_j = [j drawn at m] (1 + p_j R_m) - p_j (K + T), with S_k the mass drawn
    // before draw k, R_m = sum_{k>m} 1/(1 - S_k), T = sum_{k>=1} S_k / (1 - S_k).
    double S = 0.0;
    for (int k = 0; k < K; ++k) S += p[drawn[k]];
    double T = 0.0;
    for (int m = K - 1; m >= 1; --m) {
      S -= p[drawn[m]];  // S_m
      T += S / std::max(1.0 - S, 1e-12);
    }
    const double c = -grad_scale * a;  // d(-a log pi) = -a d log pi
    for (int e = 0; e < E; ++e) g[e] += static_cast<float>(c * -p[e] * (K + T));
    S = 0.0;
    for (int k = 0; k < K; ++k) S += p[drawn[k]];
    double R = 0.0;
    for (int m = K - 1; m >= 0; --m) {
      S -= p[drawn[m]];  // S_m
      g[drawn[m]] += static_cast<float>(c * (1.0 + p[drawn[m]] * R));
      if (m >= 1) R += 1.0 / std::max(1.0 - S, 1e-12);
    }
  }
  return h_sum / N;
}

}  // namespace moe
