// A trainable decoder built from the engine's own layers: RMSNorm, GQA attention with RoPE and
// optional q/k norm, and a dense or MoE FFN per layer. Parameters and gradients are two flat fp32
// arenas with one layout; the tensors carry Hugging Face names (model_tensor_specs), so a
// checkpoint is the arena written as safetensors, and the inference engine binds the same arena.
//
// Legend: B sequences, T tokens per sequence, N = B*T, D model width, V vocab, L layers, H heads,
// KV kv heads, hd head dim, F dense FFN width.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "model/weights.h"
#include "moe/moe_train.h"

namespace moe {

struct TrainModel {
  ModelConfig cfg;
  bool fused_experts = false;     // 3-D expert tensors (the layout of the checkpoint it came from)
  MoeLossSpec losses;
  float mtp_weight = 0.0f;        // lambda: the MTP modules' loss is lambda / D * sum of their CEs
  std::vector<TensorSpec> specs;  // tensors in arena order
  std::vector<int64_t> offset;    // (n_tensors) start of each tensor in the arenas
  std::vector<char> decay;        // (n_tensors) 1 = AdamW weight decay applies (matrices)
  std::vector<char> trainable;    // (n_tensors) 0 = not updated by gradients (correction bias)
  // Expert parallelism: this process holds the routed experts [expert_begin, expert_end) of every
  // MoE layer (expert_end < 0: all of them). The per-expert tensors of the other experts have no
  // storage in the arenas (held 0, offset -1) and their views stay null; fused 3-D expert tensors
  // (gpt-oss, a fused --init checkpoint) are held whole. The arenas hold the tensors of no
  // expert first (elements [0, n_shared), the same on every rank), then the held experts'.
  int expert_begin = 0, expert_end = -1;
  std::vector<int32_t> expert_of;  // (n_tensors) the routed expert of a per-expert tensor, else -1
  std::vector<char> held;          // (n_tensors) 1 = stored in the arenas
  int64_t n_shared = 0;            // arena elements of the tensors of no expert
  std::vector<float> params;      // (P)
  std::vector<float> grads;       // (P)
  Model w;                        // views into params
  Model g;                        // the same views into grads
  // REINFORCE routing: the reward baseline, an exponential moving average (decay rl_decay) of the
  // mean per-token reward -CE over the micro-batches so far (NaN before the first one).
  double rl_baseline = NAN;
  float rl_decay = 0.9f;
};

// Allocates the arenas for cfg, with the tensors of model_tensor_specs(cfg, fused_experts), and
// binds the views. Weights are zero until initialised. [expert_begin, expert_end): the routed
// experts held (expert parallelism; expert_end < 0: all; ignored for fused expert tensors).
void train_model_alloc(TrainModel* tm, const ModelConfig& cfg, bool fused_experts = false,
                       int expert_begin = 0, int expert_end = -1);
// Random initialisation: N(0, std) matrices (output projections scaled by 1/sqrt(2L)), norms 1,
// biases and correction biases 0. Deterministic for a seed.
void train_model_init_weights(TrainModel* tm, uint64_t seed, float std);
int64_t train_model_find(const TrainModel& tm, const std::string& name);  // tensor index or -1

// Attention widths below: dq = qk_head_dim, dv = v_dim, KVa = KV (GQA) or H (MLA, whose per-head
// keys and values are materialised), Lq q_lora_rank, Lc kv_lora_rank, R rotary dims.
struct LayerActs {
  std::vector<float> h_in;    // (N, D) residual stream entering the layer
  std::vector<float> xn1;     // (N, D) attention norm output
  // GQA
  std::vector<float> q_raw;   // (N, H*hd) query projection before q norm (with q/k norm)
  std::vector<float> k_raw;   // (N, KV*hd) key projection before k norm (with q/k norm)
  std::vector<float> q_pre;   // (N, H*hd) after norm and clip_qkv, before rope (clip_qkv only)
  std::vector<float> k_pre;   // (N, KV*hd) likewise
  // MLA
  std::vector<float> qa;      // (N, Lq) q_a_proj output (q-LoRA only)
  std::vector<float> qa_n;    // (N, Lq) after q_a_layernorm
  std::vector<float> ckv;     // (N, Lc + R) kv_a_proj_with_mqa output
  std::vector<float> c_raw;   // (N, Lc) latent before kv_a_layernorm
  std::vector<float> c_n;     // (N, Lc) latent after kv_a_layernorm
  // both
  std::vector<float> q;       // (N, H*dq) queries after norm, clip and rope
  std::vector<float> k;       // (N, KVa*dq) keys after norm, clip and rope
  std::vector<float> v;       // (N, KVa*dv) values (after clip)
  std::vector<float> probs;   // (B, T, H, T) attention probabilities
  std::vector<float> att;     // (N, H*dv) attention output
  std::vector<float> h_mid;   // (N, D) residual stream after attention
  std::vector<float> xn2;     // (N, D) FFN norm output
  std::vector<float> g, u, act;  // (N, F) dense FFN
  MoeActs moe;
  MoeLosses moe_losses;
};

// Activations of MTP module k (train/train_mtp.h). Position i of a sequence takes the token
// t_{i+k+1} and predicts t_{i+k+2} (k from 0); the last k + 1 positions of a sequence have no
// such token: they take the sequence's last token and predict nothing.
struct MtpActs {
  std::vector<int32_t> ids;      // (N) input tokens
  std::vector<int32_t> targets;  // (N) predicted tokens, -1 = ignored
  std::vector<float> emb;        // (N, D) embeddings of ids
  std::vector<float> cat;        // (N, 2D) [enorm(emb); hnorm(h_prev)]
  std::vector<float> h;          // (N, D) the block's output (the next module's h_prev)
  std::vector<float> xn;         // (N, D) shared_head.norm output
  std::vector<float> logits;     // (N, V)
  std::vector<float> dh;         // (N, D) gradient of h
};

// Activations of one micro-batch, allocated once for B x T.
struct TrainActs {
  int B = 0, T = 0;
  std::vector<LayerActs> layers;  // [L + mtp_layers] (the MTP modules' blocks last)
  std::vector<MtpActs> mtp;       // [mtp_layers]
  bool mtp_done = false;          // the last forward ran the MTP modules (train = true)
  std::vector<int32_t> ids;       // (N) input tokens
  std::vector<int32_t> targets;   // (N) next tokens, -1 = ignored
  std::vector<float> h;           // (N, D) final residual stream
  std::vector<float> xn;          // (N, D) final norm output
  std::vector<float> logits;      // (N, V)
  std::vector<float> rope_cos, rope_sin;  // (T, R/2)
  std::vector<float> scores;      // (n_threads, T) attention scratch
  // backward scratch
  std::vector<float> dlogits;     // (N, V)
  std::vector<double> row_loss;   // (N) cross-entropy per position
  std::vector<float> adv;         // (N) REINFORCE routing's advantage per position
  // Data parallelism (train_acts_enable_ep): the ranks whose tokens are routed together; their
  // REINFORCE rewards are averaged over all of them, as one process averages its batch's.
  Comm* route_comm = nullptr;
  std::vector<float> dh, dx, dtmp, dx2;  // (N, D)
  std::vector<float> dh0;         // (N, D) the MTP modules' gradient of h (MTP only)
  std::vector<float> dcat;        // (N, 2D) gradient of an MTP module's [enorm; hnorm] (MTP only)
  std::vector<float> dq, dq2;     // (N, H*dq)
  std::vector<float> dk, dk2;     // (N, KVa*dq)
  std::vector<float> dv;          // (N, KVa*dv)
  std::vector<float> datt;        // (N, H*dv)
  std::vector<float> kvb;         // (N, H*(nope+dv)) MLA kv_b_proj output / its gradient
  std::vector<float> kpe;         // (N, R) MLA shared rope key / its gradient
  std::vector<float> dc, dckv;    // (2, N, Lc), (N, Lc + R) MLA latent gradients
  std::vector<float> dqa, dqa2;   // (N, Lq) MLA q-LoRA gradients
  std::vector<float> dg, du, dact;   // (N, F)
};

void train_acts_init(TrainActs* a, const TrainModel& tm, int B, int T);
// Makes every MoE layer of the activations expert-parallel over comm, data-parallel: each rank
// runs its own B sequences, and the layers route the tokens of every rank of `route` (null:
// comm) together (moe/moe_layer.h). The ranks must then call train_forward / train_backward
// together.
void train_acts_enable_ep(TrainActs* a, const TrainModel& tm, Comm* comm, Comm* route = nullptr);

struct StepLosses {
  double ce = 0.0;       // mean cross-entropy of the counted targets
  int n_targets = 0;
  MoeLosses moe;         // summed over layers (the MTP blocks' included)
  std::vector<double> mtp;  // [mtp_layers] each MTP depth's mean cross-entropy
  double mtp_weight = 0.0;  // lambda
  double mtp_loss() const {
    double s = 0.0;
    for (double x : mtp) s += x;
    return mtp.empty() ? 0.0 : mtp_weight / static_cast<double>(mtp.size()) * s;
  }
  double total() const { return ce + moe.total() + mtp_loss(); }
};

// Forward of a micro-batch already in a->ids / a->targets. seed drives noisy/random routers. The
// MTP modules (train/train_mtp.h) run only when train is set: validation scores the main model.
StepLosses train_forward(TrainModel* tm, TrainActs* a, uint64_t seed, bool train);
// Backward of the last forward; gradients accumulate into tm->grads scaled by loss_scale
// (1 / accumulation steps). ce_scale further scales the cross-entropy's gradient: a data-parallel
// rank's share of the batch's targets (its mean over its own targets becomes its part of the
// batch mean; the balancing losses are already the batch's).
// With the REINFORCE router, the last forward's per-token cross-entropies become the routers'
// rewards: a->adv[t] = (-CE_t - b) / n_counted against the baseline b = tm->rl_baseline, which
// then moves toward this micro-batch's mean reward (router_reinforce_grad in ops/router.h). Under
// data parallelism n_counted and the mean are over every rank's targets (a->route_comm), so each
// rank's advantages are those one process computes for its rows of the global batch.
void train_backward(TrainModel* tm, TrainActs* a, float loss_scale, float ce_scale = 1.0f);

// One transformer block (layer l, a main layer or an MTP module's) over the residual stream h
// (N, D), in place; saves its activations in a->layers[l] and adds its balancing losses to *out.
void train_block_forward(TrainModel* tm, TrainActs* a, int l, float* h, uint64_t seed, bool train,
                         StepLosses* out);
// Its backward: dh (N, D) = d loss / d output on entry, d loss / d input on return. adv (N):
// REINFORCE routing's per-token advantages (main layers; null for MTP modules, whose routers then
// get the combine-weight gradient and the entropy bonus only).
void train_block_backward(TrainModel* tm, TrainActs* a, int l, float* dh, float loss_scale,
                          const float* adv = nullptr);

}  // namespace moe

namespace moe {

// Copies every tensor of the arena from a checkpoint archive (names and shapes must match; F32,
// BF16 or F16 accepted). An archive with fused 3-D expert tensors where the arena has per-expert
// ones (or the reverse) re-allocates the arena in the archive's layout first, so the model is
// saved back the way it came. Throws MoeError naming the file and tensor on any mismatch.
void train_model_load_weights(TrainModel* tm, const StArchive& ar);

// The weights of a checkpoint the trainer can start from: every tensor F32, BF16 or F16 (not a
// quantized copy written by `moe quantize`). Throws MoeError naming the file and the tensor.
void train_model_check_weights(const StArchive& ar);

// Refreshes the weights tm->w converted from the arena (gpt-oss's interleaved experts) after the
// arena changed (an optimizer step). train_forward calls it; call it before using tm->w elsewhere
// (e.g. infer_forward for validation). Gradients of those tensors are folded back into the arena
// by train_backward. Does nothing for the other families, whose views are the arena itself.
void train_model_sync_views(TrainModel* tm);

// Rebinds the weight views after the arena changed outside train_model_load_weights, for the
// tensors model_bind converts into buffers of its own (gpt-oss's interleaved experts).
void train_model_rebind(TrainModel* tm);

}  // namespace moe
