// Inference forward pass with a KV cache.
//
// One function serves prefill and decode: it runs T new tokens at positions pos..pos+T-1 against
// the cache and appends them to it, so incremental decode computes the same logits as one
// full-sequence forward (except with an expert-choice router, which chooses among the tokens of
// one call: see moe/moe_layer.h). GQA layers cache K (after norm and rope) and V; MLA layers cache
// only the normalised compressed latent and the rotated rope key, and attend in the
// weight-absorbed form.
//
// Legend: T tokens in a call, C context capacity, D model width, V vocab, H heads, KV kv heads,
// hd head dim, Lc MLA latent width, R rope dims, F widest FFN.
#pragma once

#include <cstdint>
#include <vector>

#include "model/weights.h"
#include "moe/moe_layer.h"

namespace moe {

struct LayerCache {
  std::vector<float> k;    // GQA: (C, KV, hd)      MLA: (C, Lc) normalised latent
  std::vector<float> v;    // GQA: (C, KV, hd)      MLA: (C, R) rotated rope key
};

// Routing decisions of the last infer_forward call, for analysis (moe inspect). idx[l] and w[l]
// hold (T, K) experts and combine weights of MoE layer l (empty for dense layers). An expert-choice
// router gives a token a variable number of experts: its K highest-weight ones, padded with
// expert -1 and weight 0 (FfnScratch in moe/moe_layer.h).
struct RouteCapture {
  // [L + mtp_layers] (T, K): the MTP modules' blocks last (T of that module's call)
  std::vector<std::vector<int32_t>> idx;
  std::vector<std::vector<float>> w;  // [L + mtp_layers] (T, K)
};

// Every buffer of the forward pass, allocated once by infer_state_init.
struct InferState {
  int T_max = 0;   // most tokens per forward call
  int ctx = 0;     // cache capacity C
  int pos = 0;     // tokens already in the cache
  std::vector<LayerCache> cache;  // [L + mtp_layers] (the MTP modules' blocks last)
  std::vector<float> h;        // (T_max, D) residual stream
  std::vector<float> xn;       // (T_max, D) normed input of a sub-block
  std::vector<float> q;        // (T_max, H, dq) queries (dq = qk head dim)
  std::vector<float> k;        // (T_max, KV, hd) GQA keys before caching
  std::vector<float> v;        // (T_max, KV, hd) GQA values before caching
  std::vector<float> att;      // (T_max, H, dv) attention output
  std::vector<float> proj;     // (T_max, D) block output
  std::vector<float> qa;       // (T_max, q_lora) MLA q down-projection
  std::vector<float> ckv;      // (T_max, Lc + R) MLA kv down-projection
  std::vector<float> qlat;     // (T_max, H, Lc) absorbed queries
  std::vector<float> qpe;      // (T_max, H, R) rotated rope queries
  std::vector<float> olat;     // (T_max, H, Lc) latent attention output
  std::vector<float> rope_cos; // (T_max, R/2)
  std::vector<float> rope_sin; // (T_max, R/2)
  std::vector<float> scores;   // (n_threads, C)
  std::vector<float> logits;   // (T_max, V)
  std::vector<int32_t> ids;    // (T_max) the call's token ids, all sequences in order
  std::vector<float> mtp_cat;  // (T_max, 2D) an MTP module's [enorm(emb); hnorm(h)] (MTP only)
  FfnScratch ffn;
  LinearScratch lin;           // attention matrices kept raw (ops/linear.h)
  // Analysis hooks, off by default: capture routing decisions, and perturb the input embeddings
  // by embed_noise * rms(row) * N(0, 1) draws keyed on (noise_seed, position, channel).
  RouteCapture* capture = nullptr;
  float embed_noise = 0.0f;
  uint64_t noise_seed = 0;
};

void infer_state_init(InferState* s, const Model& m, int T_max, int ctx);

// One sequence's part of a batched call: n new tokens at positions pos..pos+n-1 of its own cache
// (cache[L], each sized for ctx positions as infer_state_init sizes them).
struct SeqSpan {
  LayerCache* cache = nullptr;  // [L]
  int pos = 0;
  int ctx = 0;
  const int32_t* ids = nullptr;  // (n)
  int n = 0;
};

// Runs T tokens (ids) at the cache position s->pos, appends them to the cache and advances
// s->pos. Logits of every new position go to s->logits (T, V) if all_logits, else only the last
// position's, at s->logits[0..V). Throws MoeError on an id outside the vocab or a full cache.
void infer_forward(const Model& m, InferState* s, const int32_t* ids, int T, bool all_logits);

// Continuous batching: the new tokens of several sequences, each against its own cache, in ONE
// forward (every matrix, and each expert's weights, read once for all of them; attention per
// sequence). T = sum of n must be <= s->T_max; s->scores must fit the largest ctx (size the state
// with that ctx). Appends each sequence's tokens to its cache, but leaves advancing seqs[i].pos to
// the caller (s->pos and s->cache are not used). The last position's logits of sequence i go to
// s->logits row i (n_seqs, V). Equals running each sequence alone through infer_forward (token-
// choice routers route per token; random and expert-choice routers run per sequence).
void infer_forward_batch(const Model& m, InferState* s, const SeqSpan* seqs, int n_seqs);

// Multi-token prediction module k (model/weights.h MtpWeights) over n positions pos..pos+n-1 of
// its own cache (s->cache[L + k]; s->pos is not used): h_prev (n, D) holds the previous depth's
// hidden states at those positions (the main model's last residual stream, before its final
// norm, for k = 0; module k - 1's output after), ids (n) the tokens one past each position's
// (t_{j+k+1} at position j). Writes the module's hidden states to h_out (n, D) and the logits of
// the last position (its guess at t_{pos+n+k+1}) to s->logits[0..V). Overwrites s->h.
void infer_mtp_forward(const Model& m, InferState* s, int k, const float* h_prev,
                       const int32_t* ids, int pos, int n, float* h_out);

}  // namespace moe
