// Where the routed experts of a layer live under expert parallelism: expert e on rank
// floor(e * P / E) of the P ranks of the expert-parallel group, so rank r holds the contiguous
// block [ceil(r E / P), ceil((r + 1) E / P)) (empty when E < P and r has none).
#pragma once

#include <cstdint>

namespace moe {

// First expert of rank r when E experts split over P ranks (r = P: E).
inline int ep_expert_begin(int E, int P, int r) {
  return static_cast<int>((static_cast<int64_t>(r) * E + P - 1) / P);
}
// The rank of expert e.
inline int ep_rank_of(int e, int E, int P) {
  return static_cast<int>(static_cast<int64_t>(e) * P / E);
}

}  // namespace moe
