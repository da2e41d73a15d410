// The training loop: data, model, optimizer, schedule, validation, telemetry, checkpoints.
//
// Determinism: a step's batches depend only on (seed, step); router noise on (seed, step, micro);
// with the same thread count every step is bit-for-bit reproducible, so a resumed run equals an
// uninterrupted one. Checkpoints are written to a temporary folder and renamed into place.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "model/config.h"
#include "moe/moe_train.h"
#include "train/optim.h"

namespace moe {

struct TrainArgs {
  // data and run
  std::string data;           // corpus (Brown folder, .txt file or folder) or a prepared folder
  std::string out;            // output folder
  std::string init;           // start from this checkpoint's weights (e.g. an upcycled model)
  int steps = 200;
  uint64_t seed = 1;
  int vocab = 4096;           // tokenizer size when the data must be prepared
  bool resume = false;
  int threads = 0;
  // model
  // The default small MoE: 4 layers, d 192, 8 experts of width 384, top-2: about 9.25M parameters,
  // 3.9M active per token (1.6M of them in the untied embeddings of a 4096-token vocabulary).
  int layers = 4, d_model = 192, heads = 6, kv_heads = 0, head_dim = 0;
  int experts = 8, top_k = 2, expert_ffn = 384, shared_experts = 0, shared_ffn = 0;
  bool shared_gate = false;
  int dense_ffn = 0;          // FFN width of dense layers (default 4 * d_model... see cmd)
  int moe_every = 1, first_dense = 0;
  std::string qk_norm = "head";
  bool tie_embeddings = false;
  float init_std = 0.02f;
  // multi-token prediction (train/train_mtp.h): D modules, loss weight lambda
  int mtp = 0;
  float mtp_weight = 0.3f;
  // routing and balancing
  std::string router = "softmax_topk";
  bool renorm = false;
  float route_scale = 1.0f;
  int n_group = 1, topk_group = 1;
  // DeepSeek-V2's device-limited routing: each token's experts come from at most this many
  // devices (0 = off). The devices are the expert-parallel ranks under mpirun, else --devices
  // expert groups (so one process reproduces a multi-rank run); routed as group-limited routing
  // with one group per device.
  int route_devices = 0;
  // Expert-parallel group size under mpirun: the experts split over groups of ep consecutive
  // ranks, with data parallelism across the groups (0 = one group of every rank).
  int ep = 0;
  MoeLossSpec losses{.rl_entropy = 0.01f};  // --rl-entropy: reinforce's entropy bonus
  float rl_decay = 0.9f;       // reinforce: the reward baseline's moving-average decay
  float bias_rate = 1e-3f;
  bool bias_center = false;
  // optimisation
  int batch = 16, seq = 128, accum = 1;
  float lr = 3e-3f, min_lr_frac = 0.1f, clip = 1.0f;
  int warmup = 30;
  AdamWParams adam;
  // fine-tuning: parameter groups (embeddings, attention, norms, router, experts, shared-experts,
  // dense-mlp, lm-head)
  std::string freeze;         // comma list of frozen groups: no gradient, no optimizer state
  std::string lr_groups;      // group=multiplier,... learning-rate multipliers
  // reporting
  int eval_every = 50, eval_windows = 64, save_every = 100;
  int snapshot_every = 0;     // export the model to OUT/snapshots/step-N every N steps (0 = never)
  bool quiet = false;
  int stop_after = 0;         // act as if interrupted after this many steps (0 = never)
  // Train the dense twin of the MoE the other flags describe instead (dense_twin_args).
  bool dense_twin = false;
};

// The dense twin of the MoE that a describes: the same model, data, steps, learning rate and seed,
// with one FFN per layer as wide as the MoE's active FFN (top-k x expert width + the shared
// experts' width). Routing and balancing flags are dropped; a dense a is returned unchanged.
TrainArgs dense_twin_args(const TrainArgs& a);

// Builds the model configuration the flags describe (vocab from the data). Throws MoeError naming
// the flag for inconsistent values.
ModelConfig train_model_config(const TrainArgs& a, int vocab, int32_t eos_id);

// Runs training; returns the process exit code (0 done, 1 diverged, 130 interrupted and saved).
// stop is polled between steps (set it from a signal handler).
int train_run(const TrainArgs& a, const std::atomic<bool>* stop);

}  // namespace moe
