// AdamW with decoupled weight decay (none on norms and biases), global-norm gradient clipping,
// linear warmup then cosine decay, DeepSeek's aux-loss-free router bias update, and parameter
// groups for fine-tuning (frozen groups, per-group learning-rate multipliers).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "train/train_model.h"

namespace moe {

struct AdamWParams {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;
};

// Parameter groups, by Hugging Face tensor name (model_tensor_specs).
enum ParamGroup {
  PG_EMBEDDINGS,      // model.embed_tokens (and the output head when tied)
  PG_ATTENTION,       // self_attn.* projections, biases and sinks
  PG_NORMS,           // every RMSNorm weight: layer norms, q/k norms, MLA's latent norms, model.norm
  PG_ROUTER,          // the MoE gate (router) weights, noise weights, router bias
  PG_EXPERTS,         // routed experts
  PG_SHARED_EXPERTS,  // shared experts and their gate
  PG_DENSE_MLP,       // the FFN of dense layers
  PG_LM_HEAD,         // lm_head (untied)
  PG_MTP,             // an MTP module's eh_proj (its norms are norms, its block is a layer's)
  PG_COUNT
};

const char* param_group_name(ParamGroup g);  // "embeddings", "shared-experts", ...
// The group of a tensor; throws MoeError for a name no group claims.
ParamGroup param_group_of(const std::string& tensor_name);

struct ParamGroups {
  std::array<bool, PG_COUNT> frozen{};   // no gradient, no optimizer state, no update
  std::array<float, PG_COUNT> lr_mult;   // learning-rate multiplier
  ParamGroups() { lr_mult.fill(1.0f); }
};

// Parses --freeze ("experts,router") and --lr-groups ("experts=0.1,router=0"); empty strings
// leave the defaults. Throws MoeError naming the flag and the bad value.
void param_groups_parse(ParamGroups* g, const std::string& freeze, const std::string& lr_groups);
// Marks the tensors of frozen groups not trainable (call before adamw_init).
void param_groups_freeze(TrainModel* tm, const ParamGroups& g);

struct AdamW {
  AdamWParams p;
  int64_t step = 0;                // updates done
  std::vector<int64_t> state_off;  // (n_tensors) start of the tensor's moments in m/v; -1 = none
  std::vector<float> lr_mult;      // (n_tensors) learning-rate multiplier
  std::vector<float> m;            // (S) first moments of the trainable tensors
  std::vector<float> v;            // (S) second moments
  // Routed experts: in a step where an expert received no token (its gradient is zero), it is
  // skipped: no moment update, no weight decay, and its bias correction counts only the steps
  // it was updated in, as PyTorch's AdamW skips a parameter whose gradient is None (docs/training.md).
  std::vector<int32_t> ex_layer;     // (n_tensors) layer of a routed-expert tensor, -1 = other
  std::vector<int32_t> ex_index;     // (n_tensors) its expert, -1 = all E (fused, sliced on axis 0)
  std::vector<int64_t> expert_step;  // (L, E) updates each routed expert has had
};

// Allocates moments for the trainable tensors only (frozen ones and the correction bias get
// none); learning-rate multipliers from groups.
void adamw_init(AdamW* opt, const TrainModel& tm, const AdamWParams& p,
                const ParamGroups& groups = ParamGroups());
// One update of every trainable tensor with learning rate lr (times its group's multiplier).
// received (L, E): the tokens each routed expert kept in the step (after capacity dropping, over
// every micro-batch); experts with none are skipped (see AdamW). Null: every expert is updated.
void adamw_step(AdamW* opt, TrainModel* tm, float lr,
                const std::vector<std::vector<int64_t>>* received = nullptr);

// Zeroes the gradients of tensors that are not trainable, then scales the others so their global
// L2 norm is at most max_norm (0 = off). Returns the norm of the trainable gradients before
// clipping. experts (expert parallelism): the ranks that hold the other routed experts, whose
// gradients count in the norm too (the tensors of no expert are the same on every rank).
double grad_clip(TrainModel* tm, float max_norm, Comm* experts = nullptr);

// Learning rate at `step` (0-based): linear warmup to lr over `warmup` steps, then cosine decay to
// lr * min_frac at `total`.
float lr_schedule(int64_t step, int64_t total, int64_t warmup, float lr, float min_frac);

// Aux-loss-free balancing: b_i += rate * sign(mean_load - load_i) for each MoE layer with a
// correction bias; loads (L, E) are the selections counted over the whole optimizer step. With
// center, the mean of the update is subtracted (torchtitan's variant).
void router_bias_update(TrainModel* tm, const std::vector<std::vector<int64_t>>& loads, float rate,
                        bool center);

}  // namespace moe
