#include "train/optim.h"

#include <cmath>

#include "core/error.h"

namespace moe {

void adamw_init(AdamW* opt, const TrainModel& tm, const AdamWParams& p) {
  opt->p = p;
  opt->step = 0;
  opt->m.assign(tm.params.size(), 0.0f);
  opt->v.assign(tm.params.size(), 0.0f);
}

void adamw_step(AdamW* opt, TrainModel* tm, float lr) {
  ++opt->step;
  const AdamWParams& p = opt->p;
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(opt->step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(opt->step));
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_bc2 = static_cast<float>(1.0 / bc2);
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (!tm->trainable[i]) continue;
    int64_t n = 1;
    for (int64_t d : tm->specs[i].shape) n *= d;
    float* w = tm->params.data() + tm->offset[i];
    const float* g = tm->grads.data() + tm->offset[i];
    float* m = opt->m.data() + tm->offset[i];
    float* v = opt->v.data() + tm->offset[i];
    const float decay = tm->decay[i] ? lr * p.weight_decay : 0.0f;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t j = 0; j < n; ++j) {
      m[j] = p.beta1 * m[j] + (1.0f - p.beta1) * g[j];
      v[j] = p.beta2 * v[j] + (1.0f - p.beta2) * g[j] * g[j];
      w[j] -= decay * w[j];
      w[j] -= step_size * m[j] / (std::sqrt(v[j] * inv_bc2) + p.eps);
    }
  }
}

double grad_clip(TrainModel* tm, float max_norm) {
  double ss = 0.0;
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (!tm->trainable[i]) continue;
    int64_t n = 1;
    for (int64_t d : tm->specs[i].shape) n *= d;
    const float* g = tm->grads.data() + tm->offset[i];
    for (int64_t j = 0; j < n; ++j) ss += static_cast<double>(g[j]) * g[j];
  }
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const float s = static_cast<float>(max_norm / (norm + 1e-6));
    for (float& g : tm->grads) g *= s;
  }
  return norm;
}

float lr_schedule(int64_t step, int64_t total, int64_t warmup, float lr, float min_frac) {
  if (warmup > 0 && step < warmup) return lr * static_cast<float>(step + 1) / warmup;
  if (total <= warmup) return lr;
  const double prog = std::min(1.0, static_cast<double>(step - warmup) / (total - warmup));
  const double cosv = 0.5 * (1.0 + std::cos(M_PI * prog));
  return static_cast<float>(lr * (min_frac + (1.0 - min_frac) * cosv));
}

void router_bias_update(TrainModel* tm, const std::vector<std::vector<int64_t>>& loads, float rate,
                        bool center) {
  const ModelConfig& c = tm->cfg;
  if (!c.router.has_correction_bias || rate == 0.0f) return;
  MOE_CHECK(static_cast<int>(loads.size()) == c.n_layers);
  const int E = c.n_experts;
  std::vector<float> delta(E);
  for (int l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe[l]) continue;
    float* b = const_cast<float*>(tm->w.layers[l].e_bias);
    double mean = 0.0;
    for (int e = 0; e < E; ++e) mean += static_cast<double>(loads[l][e]) / E;
    double dmean = 0.0;
    for (int e = 0; e < E; ++e) {
      const double diff = mean - static_cast<double>(loads[l][e]);
      delta[e] = diff > 0 ? rate : diff < 0 ? -rate : 0.0f;
      dmean += delta[e] / E;
    }
    for (int e = 0; e < E; ++e) b[e] += delta[e] - (center ? static_cast<float>(dmean) : 0.0f);
  }
}

}  // namespace moe
