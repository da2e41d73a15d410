// The server's KV cache slots: one per concurrent sequence, each sized for the per-sequence
// context (GQA: K and V; MLA: the compressed latent and the rope key, forward.h LayerCache).
//
// Prefix caching: a slot keeps what its last sequence left in the cache after that sequence ends.
// A new prompt takes the free slot whose cached tokens share the longest prefix with it (ties: the
// least recently used), and only the rest of the prompt is prefilled. At least the prompt's last
// token is always run again, for its logits.
#pragma once

#include <cstdint>
#include <vector>

#include "infer/forward.h"

namespace moe {

struct KvSlot {
  std::vector<LayerCache> cache;  // [L], each (ctx, ...) as infer_state_init sizes it
  std::vector<int32_t> tokens;    // what the cache holds, in order (its length is the position)
  bool busy = false;
  uint64_t last_used = 0;         // tick of the last release
};

struct KvSlots {
  int ctx = 0;
  uint64_t tick = 0;
  std::vector<KvSlot> slots;
};

void kv_slots_init(KvSlots* k, const Model& m, int n, int ctx);

// Takes a free slot for `prompt` (-1 if none is free) and truncates its tokens to the reusable
// prefix; *reuse gets that prefix's length (< prompt.size()).
int kv_slots_acquire(KvSlots* k, const std::vector<int32_t>& prompt, int* reuse);

// Frees the slot; its cache and tokens stay for a later prompt to reuse.
void kv_slots_release(KvSlots* k, int slot);

int kv_slots_busy(const KvSlots& k);

}  // namespace moe
