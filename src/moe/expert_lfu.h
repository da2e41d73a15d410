// The admission and eviction policy of the hot-expert cache (moe/expert_cache.h): LFU with
// exponential decay, over keys (layer * E + expert) and a fixed number of slots.
//
// Score. Every key has a score, the decayed count of the tokens routed to it:
//   score_k(now) = sum over past calls c of  count_k(c) * d^(tokens(now) - tokens(c))
// where count_k(c) is how many tokens call c routed to k and d = 2^(-1 / half_life) per token, so
// a use weighs half after half_life tokens. The clock advances by the tokens of each forward call
// (lfu_decay multiplies every score by d^T once per call, before its layers touch their keys).
// Scores are kept for every key, cached or not, so an expert's history survives its eviction.
//
// Admission. Within a layer call, lfu_begin_call starts a new stamp; lfu_touch adds each used
// key's count; then each used key is looked up (lfu_lookup: a hit pins its slot for the call) and
// on a miss offered to lfu_admit:
//  - a free slot (the lowest-numbered) takes it;
//  - else the victim is the unpinned slot (not used by this call) with the lowest score, ties to
//    the lowest slot; the key is admitted, evicting the victim, only if its score is strictly
//    higher than the victim's (equal scores keep the resident expert: no churn on ties);
//  - else (every slot pinned, or the key scores no higher) it is not admitted: the caller runs
//    the expert from the memory map.
// A slot pinned by this call is never evicted, so the weights a call has bound stay valid until
// the next lfu_begin_call.
//
// Legend: K keys (L * E), S slots.
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

struct ExpertLfu {
  double decay = 1.0;             // d, per token
  int64_t stamp = 0;              // the current call's stamp
  std::vector<double> score;      // (K) decayed counts
  std::vector<int32_t> slot_of;   // (K) the key's slot, -1 if not cached
  std::vector<int32_t> key_of;    // (S) the slot's key, -1 if free
  std::vector<int64_t> pinned;    // (S) stamp of the last call that used the slot
};

// K keys, S slots; half_life in tokens (> 0).
void lfu_init(ExpertLfu* p, int64_t n_keys, int64_t n_slots, double half_life);
// Advances the clock by `tokens` (every score times d^tokens).
void lfu_decay(ExpertLfu* p, int64_t tokens);
// Starts a layer call: slots used before it become evictable again.
void lfu_begin_call(ExpertLfu* p);
void lfu_touch(ExpertLfu* p, int64_t key, double count);
// The key's slot (pinned for this call), or -1 on a miss.
int32_t lfu_lookup(ExpertLfu* p, int64_t key);
// The slot the key now occupies (pinned; the caller fills it), or -1 if not admitted. *evicted
// (may be null) receives the key that left the slot, or -1.
int32_t lfu_admit(ExpertLfu* p, int64_t key, int64_t* evicted);

}  // namespace moe
