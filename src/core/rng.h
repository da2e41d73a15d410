// Deterministic counter-based random numbers: a draw is a pure function of (seed, index), so any
// draw can be recomputed in any order and on any thread (router noise, random routing, the data
// sampler, weight initialisation).
#pragma once

#include <cstdint>

namespace moe {

// SplitMix64's output function: a 64-bit mix of x (Steele, Lea and Flood, 2014).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Deterministic draws for (seed, i), all arithmetic modulo 2^64:
//  rng_uniform = (splitmix64(seed * 0xd1342543de82ef95 + i) >> 11) / 2^53, in [0, 1);
//  rng_normal  = sqrt(-2 ln(1 - u1)) cos(2 pi u2) with u1 = rng_uniform(seed, 2i),
//                u2 = rng_uniform(seed, 2i + 1) (Box-Muller).
double rng_uniform(uint64_t seed, uint64_t i);
double rng_normal(uint64_t seed, uint64_t i);

}  // namespace moe
