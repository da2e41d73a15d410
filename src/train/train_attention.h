// Training forward and backward of one attention block, for every attention the inference forward
// runs: GQA (optional q/k norm per head or over the whole projection, clip_qkv, biases, sliding
// window, sinks) and MLA (DeepSeek; optional q-LoRA, decoupled rope). MLA trains in the plain form:
// per-head keys [k_nope, k_pe] and values are materialised from kv_b_proj, so the ordinary
// attention op and its backward serve both; the inference forward uses the absorbed form.
//
// Legend: N = B*T tokens, D model width, H heads, KV kv heads, KVa attention kv heads (KV, or H
// for MLA), dq query/key head width, dv value head width, R rotary dims, Lc kv_lora_rank,
// Lq q_lora_rank.
#pragma once

#include <cstdint>

#include "train/train_model.h"

namespace moe {

// Allocates the attention activations of one layer for N tokens in sequences of T.
void attn_acts_init(LayerActs* la, const ModelConfig& c, int64_t N, int T);
// Allocates the attention backward scratch of a (shared by all layers).
void attn_scratch_init(TrainActs* a, const ModelConfig& c, int64_t N);

// out (N, D) = the attention block (o_proj included) of la->xn1 (N, D); saves what the backward
// needs in la. l is the layer (its sliding window).
void attn_train_forward(float* out, LayerActs* la, TrainActs* a, const ModelConfig& c,
                        const LayerWeights& w, int l);

// dx (N, D) = d loss / d xn1 from dout (N, D) = d loss / d out; parameter gradients accumulate
// into g (views into the gradient arena).
void attn_train_backward(float* dx, LayerActs* la, TrainActs* a, const ModelConfig& c,
                         const LayerWeights& w, const LayerWeights& g, const float* dout, int l);

}  // namespace moe
