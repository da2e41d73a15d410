// AdamW with decoupled weight decay (none on norms and biases), global-norm gradient clipping,
// linear warmup then cosine decay, and DeepSeek's aux-loss-free router bias update.
#pragma once

#include <cstdint>
#include <vector>

#include "train/train_model.h"

namespace moe {

struct AdamWParams {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;
};

struct AdamW {
  AdamWParams p;
  int64_t step = 0;       // updates done
  std::vector<float> m;   // (P) first moment
  std::vector<float> v;   // (P) second moment
};

void adamw_init(AdamW* opt, const TrainModel& tm, const AdamWParams& p);
// One update of every trainable tensor with learning rate lr.
void adamw_step(AdamW* opt, TrainModel* tm, float lr);

// Scales the gradients so their global L2 norm is at most max_norm (0 = off). Returns the norm
// before clipping.
double grad_clip(TrainModel* tm, float max_norm);

// Learning rate at `step` (0-based): linear warmup to lr over `warmup` steps, then cosine decay to
// lr * min_frac at `total`.
float lr_schedule(int64_t step, int64_t total, int64_t warmup, float lr, float min_frac);

// Aux-loss-free balancing: b_i += rate * sign(mean_load - load_i) for each MoE layer with a
// correction bias; loads (L, E) are the selections counted over the whole optimizer step. With
// center, the mean of the update is subtracted (torchtitan's variant).
void router_bias_update(TrainModel* tm, const std::vector<std::vector<int64_t>>& loads, float rate,
                        bool center);

}  // namespace moe
