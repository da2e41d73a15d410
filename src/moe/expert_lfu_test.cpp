// The expert cache's LFU-with-decay policy against a plain reference that keeps the whole history
// of routing counts and recomputes each score from it (sum of count * d^age), with the admission
// rule written out as in expert_lfu.h. d = 1/2 (half-life 1 token) and integer counts keep every
// score exact in double, so the two must agree decision by decision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "moe/expert_lfu.h"

namespace moe {
namespace {

struct RefLfu {
  double d = 0.5;
  int64_t clock = 0;  // tokens so far
  struct Use {
    int64_t key, clock;
    double count;
  };
  std::vector<Use> uses;
  std::vector<int64_t> slot_key;  // (S) -1 free
  std::vector<bool> pinned;       // (S) used by the current call

  double score(int64_t key) const {
    double s = 0.0;
    for (const Use& u : uses)
      if (u.key == key) s += u.count * std::pow(d, static_cast<double>(clock - u.clock));
    return s;
  }
  int32_t find(int64_t key) const {
    for (size_t s = 0; s < slot_key.size(); ++s)
      if (slot_key[s] == key) return static_cast<int32_t>(s);
    return -1;
  }
  int32_t admit(int64_t key) {
    for (size_t s = 0; s < slot_key.size(); ++s)
      if (slot_key[s] < 0) {
        slot_key[s] = key;
        pinned[s] = true;
        return static_cast<int32_t>(s);
      }
    int32_t victim = -1;
    for (size_t s = 0; s < slot_key.size(); ++s) {
      if (pinned[s]) continue;
      if (victim < 0 || score(slot_key[s]) < score(slot_key[victim])) victim = static_cast<int32_t>(s);
    }
    if (victim < 0 || !(score(key) > score(slot_key[victim]))) return -1;
    slot_key[victim] = key;
    pinned[victim] = true;
    return victim;
  }
};

TEST(ExpertLfu, MatchesHistoryReference) {
  for (int S : {1, 3, 6}) {
    const int n_keys = 12;
    ExpertLfu p;
    lfu_init(&p, n_keys, S, 1.0);  // d = 0.5
    RefLfu r;
    r.slot_key.assign(S, -1);
    r.pinned.assign(S, false);
    std::mt19937 g(42 + S);
    int hits = 0, admits = 0, denied = 0, evictions = 0;
    for (int call = 0; call < 36; ++call) {  // ages stay below 40 tokens: scores exact
      const int tokens = call % 4 == 0 ? 1 + static_cast<int>(g() % 3) : 0;
      if (tokens) {
        lfu_decay(&p, tokens);
        r.clock += tokens;
      }
      lfu_begin_call(&p);
      std::fill(r.pinned.begin(), r.pinned.end(), false);
      // 1-3 distinct keys with counts 1-4, skewed toward low keys.
      std::vector<int64_t> keys;
      const int nk = 1 + static_cast<int>(g() % 3);
      while (static_cast<int>(keys.size()) < nk) {
        const int64_t k = std::min<int64_t>(g() % n_keys, g() % n_keys);
        if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
      }
      for (int64_t k : keys) {
        const double c = 1 + g() % 4;
        lfu_touch(&p, k, c);
        r.uses.push_back({k, r.clock, c});
      }
      for (int64_t k : keys) {
        ASSERT_EQ(p.score[k], r.score(k)) << "call " << call << " key " << k;
        int32_t got = lfu_lookup(&p, k);
        const int32_t want_hit = r.find(k);
        ASSERT_EQ(got, want_hit) << "call " << call << " key " << k;
        if (want_hit >= 0) {
          r.pinned[want_hit] = true;
          ++hits;
          continue;
        }
        int64_t evicted = -2;
        std::vector<int64_t> old = r.slot_key;
        const int32_t want = r.admit(k);
        got = lfu_admit(&p, k, &evicted);
        ASSERT_EQ(got, want) << "call " << call << " key " << k;
        if (want < 0) {
          ++denied;
          EXPECT_EQ(evicted, -1);
          continue;
        }
        ++admits;
        EXPECT_EQ(evicted, old[want]);
        evictions += old[want] >= 0;
      }
      for (int s = 0; s < S; ++s) ASSERT_EQ(p.key_of[s], r.slot_key[s]) << "call " << call;
    }
    // The stream exercises every branch of the rule.
    EXPECT_GT(hits, 0) << S;
    EXPECT_GT(admits, 0) << S;
    EXPECT_GT(evictions, 0) << S;
    EXPECT_GT(denied, 0) << S;
  }
}

TEST(ExpertLfu, HalfLifeAndPinning) {
  ExpertLfu p;
  lfu_init(&p, 3, 1, 64.0);
  lfu_touch(&p, 0, 8.0);
  lfu_decay(&p, 64);
  EXPECT_NEAR(p.score[0], 4.0, 1e-12);  // halved after the half-life
  lfu_begin_call(&p);
  ASSERT_EQ(lfu_admit(&p, 0, nullptr), 0);
  lfu_touch(&p, 1, 100.0);
  EXPECT_EQ(lfu_admit(&p, 1, nullptr), -1);  // the only slot is pinned by this call
  lfu_begin_call(&p);
  int64_t ev = -2;
  EXPECT_EQ(lfu_admit(&p, 1, &ev), 0);  // next call: higher score evicts
  EXPECT_EQ(ev, 0);
  lfu_begin_call(&p);
  lfu_touch(&p, 2, 100.0);
  EXPECT_EQ(lfu_admit(&p, 2, nullptr), -1);  // equal score keeps the resident expert
}

}  // namespace
}  // namespace moe
