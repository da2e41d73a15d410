// KV slot choice: the free slot sharing the longest prefix with the prompt, ties to the least
// recently used, never the whole prompt (its last token runs again for the logits).
#include <gtest/gtest.h>

#include "serve/kv_slots.h"
#include "test_util.h"

namespace moe {
namespace {

TEST(KvSlots, LongestPrefixThenLeastRecentlyUsed) {
  Model m;
  model_load(&m, moe_test::fixture_path("olmoe_base"));
  KvSlots k;
  kv_slots_init(&k, m, 3, 16);
  ASSERT_EQ(k.slots.size(), 3u);
  EXPECT_EQ(k.slots[0].cache[0].k.size(), 16u * m.cfg.n_kv_heads * m.cfg.head_dim);
  int reuse = -1;
  // All empty: the first slot, nothing to reuse.
  EXPECT_EQ(kv_slots_acquire(&k, {1, 2, 3}, &reuse), 0);
  EXPECT_EQ(reuse, 0);
  k.slots[0].tokens = {1, 2, 3, 4};
  EXPECT_EQ(kv_slots_acquire(&k, {5, 6}, &reuse), 1);
  k.slots[1].tokens = {5, 6, 7};
  kv_slots_release(&k, 1);  // released first: least recently used of the two
  kv_slots_release(&k, 0);
  // Slot 0 shares 3 tokens; slot 1 none.
  EXPECT_EQ(kv_slots_acquire(&k, {1, 2, 3, 9}, &reuse), 0);
  EXPECT_EQ(reuse, 3);
  EXPECT_EQ(k.slots[0].tokens.size(), 3u);
  kv_slots_release(&k, 0);
  // The whole prompt cached: reuse all but its last token.
  EXPECT_EQ(kv_slots_acquire(&k, {1, 2, 3}, &reuse), 0);
  EXPECT_EQ(reuse, 2);
  EXPECT_EQ(kv_slots_busy(k), 1);
  // No shared prefix anywhere: slot 2 (never used) before slot 1 (used earlier).
  EXPECT_EQ(kv_slots_acquire(&k, {8}, &reuse), 2);
  EXPECT_EQ(kv_slots_acquire(&k, {8}, &reuse), 1);
  EXPECT_EQ(kv_slots_acquire(&k, {8}, &reuse), -1);  // all busy
  EXPECT_EQ(kv_slots_busy(k), 3);
}

}  // namespace
}  // namespace moe
