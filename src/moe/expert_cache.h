// A hot-expert cache for models larger than RAM: whole routed experts (the gate, up and down rows
// of one expert) held in locked anonymous memory, so that the experts a model uses most are not
// read from storage again, and the rest are read exactly once per use.
//
// Storage. One anonymous mapping of S slots, each with room for one expert's three matrices
// (each at the same offset modulo 64 as in the file, so the kernels see the same alignment),
// mlock'ed where allowed (a one-line warning where RLIMIT_MEMLOCK refuses: the cache then works
// but may be swapped). A slot is filled with pread from the checkpoint file through a descriptor
// of its own, opened with POSIX_FADV_RANDOM (no readahead past the expert), and the range is then
// dropped from the page cache (POSIX_FADV_DONTNEED) so the cache, not the page cache, holds it.
// Only raw experts (BF16, Q8_0, Q4_0 and the GGUF types, left in the map) are cached.
//
// Lookup (expert_cache_bind, called by the MoE layer after dispatch): every expert the call runs
// is looked up; a hit runs from its slot; a miss is offered to the policy (moe/expert_lfu.h: LFU
// with exponential decay of the live routing counts) and, if admitted, read into a slot and run
// from there; otherwise it runs from the memory map, whose expert ranges were set MADV_RANDOM at
// attach (no 8 MiB read-around per fault) and are requested with POSIX_FADV_WILLNEED right
// before use. The bytes are the same either way, so the logits are bit-identical with and
// without the cache.
//
// Prefetch (expert_cache_predict, called by the forward after layer l's attention): layer l+1's
// router runs on the current residual stream normed with layer l+1's ffn_norm (the input that
// layer would see if layer l's FFN and layer l+1's attention added nothing) and predicts its top-k;
// the predicted experts not in the cache get POSIX_FADV_WILLNEED, so storage reads them while
// layer l's experts and layer l+1's attention compute. When layer l+1 routes, the prediction is
// scored: the fraction of each token's actual experts that were predicted.
//
// One forward at a time: the cache is shared by every InferState of a Model (Model::expert_cache)
// and is not thread-safe. Not used under expert parallelism.
//
// Legend: L layers, E experts, K experts per token, T tokens, D model width, S slots.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/weights.h"
#include "moe/expert_lfu.h"
#include "ops/experts.h"
#include "ops/linear.h"
#include "ops/router.h"

namespace moe {

struct ExpertCacheOptions {
  double gib = 0.0;         // cache size in GiB (2^30 bytes); 0: no cache
  double half_life = 64.0;  // tokens after which a routing count weighs half (expert_lfu.h)
  bool prefetch = true;     // predict the next layer's experts and request them early
  bool lock = true;         // mlock the cache
};

struct ExpertCacheStats {
  int64_t tokens = 0;        // tokens of every forward call since attach
  int64_t lookups = 0;       // expert uses (one per expert per layer call)
  int64_t hits = 0;          // ... served from a slot
  int64_t admitted = 0;      // misses read into a slot
  int64_t from_map = 0;      // misses run from the memory map
  int64_t evictions = 0;
  int64_t miss_bytes = 0;    // the misses' expert bytes (admitted and from the map)
  int64_t read_bytes = 0;    // bytes pread into slots
  int64_t prefetch_experts = 0, prefetch_bytes = 0;  // WILLNEED requests of predicted experts
  int64_t pred_tokens = 0;   // tokens whose routing was predicted
  int64_t pred_total = 0;    // their actual experts
  int64_t pred_hits = 0;     // ... of which predicted
  int64_t uncacheable = 0;   // expert uses that are not raw (fp32), never cached
};

// One matrix of one expert in the checkpoint: file (index into the model's archive), byte offset
// and length of its rows.
struct ExpertRange {
  int file = -1;
  int64_t off = 0, len = 0;
};

struct ExpertCache {
  ExpertCacheOptions opt;
  int L = 0, E = 0, K = 0, D = 0;
  std::vector<int> fds;                // [archive files] descriptors for pread, -1 if unused
  std::vector<ExpertRange> ranges;     // (L, E, 3) gate, up, down
  std::vector<uint8_t> cacheable;      // (L, E)
  int64_t region[3] = {0, 0, 0};       // bytes of each matrix's region in a slot
  int64_t slot_bytes = 0;
  int64_t n_slots = 0;
  uint8_t* arena = nullptr;            // (S, slot_bytes)
  size_t arena_bytes = 0;
  bool locked = false;
  ExpertLfu lfu;
  std::vector<int64_t> fill;           // (E) keys admitted by the current call, to be read
  int n_fill = 0;
  std::vector<uint8_t> pmark;          // (E) experts already requested by a prediction
  ExpertCacheStats stats;
  // Prefetch predictions, two in flight: the one for layer l + 1 is made before layer l's MoE
  // runs and scores layer l's. Buffer b = layer % 2 holds layer pred_layer[b] (-1: none) over
  // pred_T[b] tokens.
  int pred_layer[2] = {-1, -1}, pred_T[2] = {0, 0};
  std::vector<float> pxn;              // (T_max, D) predicted MoE input
  std::vector<float> plogits;          // (T_max, E)
  std::vector<int32_t> pidx;           // (2, T_max, K) predicted experts
  Routing proute;
  LinearScratch plin;
  int pred_T_max = 0;

  ExpertCache() = default;
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;
  ~ExpertCache();
};

// Creates the cache of m (m->expert_cache) with o.gib GiB; a no-op when o.gib <= 0. Throws
// MoeError if the size holds no expert, or the model has no raw routed experts in a file.
void expert_cache_attach(Model* m, const ExpertCacheOptions& o);

// The start of a forward call over T tokens: the policy's clock advances by T.
void expert_cache_begin_forward(ExpertCache* c, int T);

// Fills xw [E] with experts [E] of layer `layer`, where each expert the segments use (rows > 0)
// points at its cache slot when it is cached (or admitted now). idx (N, K): the call's routing, to
// score a pending prediction of this layer.
void expert_cache_bind(ExpertCache* c, int layer, const ExpertWeights* experts,
                       const ExpertSegments& seg, ExpertWeights* xw, const int32_t* idx, int N,
                       int K);

// Predicts layer `layer`'s experts for the T rows of h (T, D) (the residual stream after the
// previous layer's attention) into c->pidx and requests the uncached ones from storage. ids (T)
// and pos: the tokens and the first position (hash and random routers).
void expert_cache_predict(ExpertCache* c, const Model& m, int layer, const float* h, int T,
                          const int32_t* ids, int64_t pos);

// The pending prediction of `layer` ((T, K) experts), or null if there is none.
const int32_t* expert_cache_prediction(const ExpertCache& c, int layer);

// The bytes of one expert's three matrices as stored.
int64_t expert_cache_expert_bytes(const ExpertCache& c, int layer, int e);

// "expert cache: 1.50 GiB, 440 of 1024 experts (locked); hit rate 61.2% ...": one line of the
// counters since attach, per-token figures over stats.tokens.
std::string expert_cache_summary(const ExpertCache& c);

}  // namespace moe
