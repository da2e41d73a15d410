#include "moe/expert_lfu.h"

#include <cmath>

#include "core/error.h"

namespace moe {

void lfu_init(ExpertLfu* p, int64_t n_keys, int64_t n_slots, double half_life) {
  MOE_CHECK(n_keys >= 0 && n_slots >= 0 && half_life > 0.0);
  p->decay = std::exp2(-1.0 / half_life);
  p->stamp = 0;
  p->score.assign(n_keys, 0.0);
  p->slot_of.assign(n_keys, -1);
  p->key_of.assign(n_slots, -1);
  p->pinned.assign(n_slots, -1);
}

void lfu_decay(ExpertLfu* p, int64_t tokens) {
  if (tokens <= 0) return;
  const double f = std::pow(p->decay, static_cast<double>(tokens));
  for (double& s : p->score) s *= f;
}

void lfu_begin_call(ExpertLfu* p) { ++p->stamp; }

void lfu_touch(ExpertLfu* p, int64_t key, double count) {
  MOE_CHECK(key >= 0 && key < static_cast<int64_t>(p->score.size()));
  p->score[key] += count;
}

int32_t lfu_lookup(ExpertLfu* p, int64_t key) {
  MOE_CHECK(key >= 0 && key < static_cast<int64_t>(p->slot_of.size()));
  const int32_t s = p->slot_of[key];
  if (s >= 0) p->pinned[s] = p->stamp;
  return s;
}

int32_t lfu_admit(ExpertLfu* p, int64_t key, int64_t* evicted) {
  MOE_CHECK(key >= 0 && key < static_cast<int64_t>(p->slot_of.size()) && p->slot_of[key] < 0);
  if (evicted) *evicted = -1;
  const int32_t S = static_cast<int32_t>(p->key_of.size());
  int32_t victim = -1;
  for (int32_t s = 0; s < S; ++s) {
    if (p->key_of[s] < 0) {
      victim = s;
      break;
    }
    if (p->pinned[s] == p->stamp) continue;
    if (victim < 0 || p->score[p->key_of[s]] < p->score[p->key_of[victim]]) victim = s;
  }
  if (victim < 0) return -1;
  const int32_t old = p->key_of[victim];
  if (old >= 0) {
    if (!(p->score[key] > p->score[old])) return -1;
    p->slot_of[old] = -1;
    if (evicted) *evicted = old;
  }
  p->key_of[victim] = static_cast<int32_t>(key);
  p->slot_of[key] = victim;
  p->pinned[victim] = p->stamp;
  return victim;
}

}  // namespace moe
