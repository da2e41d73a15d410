// Multi-token prediction (DeepSeek-V3 report, section 2.2), training side.
//
// D sequential modules follow the main model. Module k (from 0) at position i combines the
// previous depth's hidden state h_prev (the main model's last residual stream for k = 0, before
// its final norm; module k - 1's block output after) with the embedding of token t_{i+k+1}:
//   x   = eh_proj([enorm(embed(t_{i+k+1})); hnorm(h_prev_i)])       (DeepSeek's order)
//   h_i = block(x)_i                                                 (layer L + k, causal)
//   logits = lm_head(shared_head.norm(h_i)), predicting t_{i+k+2}.
// The embedding and the output head are the main model's (shared parameters); enorm, hnorm,
// eh_proj, shared_head.norm and the block are the module's own. The loss adds
// lambda / D * sum_k CE_k to the main cross-entropy (TrainModel::mtp_weight = lambda).
// The last k + 1 positions of each sequence have no input token: they take the sequence's last
// token and predict nothing (the causal block keeps them from the scored positions; they do
// count in the block's balancing losses and capacity, as any token of the batch does).
//
// Legend: N = B*T tokens, D model width, V vocab, L main layers.
#pragma once

#include <cstdint>

#include "train/train_model.h"

namespace moe {

// Allocates a->mtp, a->dh0 and a->dcat for tm's modules (nothing without MTP).
void mtp_acts_init(TrainActs* a, const TrainModel& tm);

// Forward of every module after the main forward (a->h holds the main model's last hidden
// state); out->mtp gets each depth's mean cross-entropy, out->mtp_weight lambda, and out->moe the
// blocks' balancing losses.
void mtp_train_forward(TrainModel* tm, TrainActs* a, uint64_t seed, StepLosses* out);

// Backward of the modules, before the main model's: parameter gradients accumulate into
// tm->grads (the shared embedding and head included), and a->dh0 receives the gradient of the
// main model's last hidden state. Scales as train_backward's.
void mtp_train_backward(TrainModel* tm, TrainActs* a, float loss_scale, float ce_scale);

}  // namespace moe
