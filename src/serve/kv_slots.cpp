#include "serve/kv_slots.h"

#include "core/error.h"

namespace moe {

void kv_slots_init(KvSlots* k, const Model& m, int n, int ctx) {
  MOE_CHECK(n > 0 && ctx > 0);
  k->ctx = ctx;
  k->tick = 0;
  k->slots.assign(n, KvSlot());
  const ModelConfig& c = m.cfg;
  const int64_t row_k = c.mla ? c.kv_lora_rank : static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  const int64_t row_v = c.mla ? c.rope.dim : static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  for (KvSlot& s : k->slots) {
    s.cache.assign(c.n_layers, LayerCache());
    for (LayerCache& lc : s.cache) {
      lc.k.assign(ctx * row_k, 0.0f);  // GQA (C, KV, hd); MLA (C, Lc)
      lc.v.assign(ctx * row_v, 0.0f);  // GQA (C, KV, hd); MLA (C, R)
    }
  }
}

int kv_slots_acquire(KvSlots* k, const std::vector<int32_t>& prompt, int* reuse) {
  int best = -1;
  size_t best_len = 0;
  for (int i = 0; i < static_cast<int>(k->slots.size()); ++i) {
    const KvSlot& s = k->slots[i];
    if (s.busy) continue;
    size_t n = 0;
    while (n < s.tokens.size() && n < prompt.size() && s.tokens[n] == prompt[n]) ++n;
    if (best < 0 || n > best_len ||
        (n == best_len && s.last_used < k->slots[best].last_used)) {
      best = i;
      best_len = n;
    }
  }
  if (best < 0) return -1;
  if (!prompt.empty() && best_len >= prompt.size()) best_len = prompt.size() - 1;
  KvSlot& s = k->slots[best];
  s.busy = true;
  s.tokens.resize(best_len);
  *reuse = static_cast<int>(best_len);
  return best;
}

void kv_slots_release(KvSlots* k, int slot) {
  MOE_CHECK(slot >= 0 && slot < static_cast<int>(k->slots.size()) && k->slots[slot].busy);
  k->slots[slot].busy = false;
  k->slots[slot].last_used = ++k->tick;
}

int kv_slots_busy(const KvSlots& k) {
  int n = 0;
  for (const KvSlot& s : k.slots) n += s.busy;
  return n;
}

}  // namespace moe
