#include "core/rng.h"

#include <cmath>

namespace moe {

double rng_uniform(uint64_t seed, uint64_t i) {
  return static_cast<double>(splitmix64(seed * 0xd1342543de82ef95ULL + i) >> 11) *
         (1.0 / 9007199254740992.0);
}

// Box-Muller over two uniforms; 1 - u keeps the logarithm's argument in (0, 1].
double rng_normal(uint64_t seed, uint64_t i) {
  const double u1 = 1.0 - rng_uniform(seed, 2 * i), u2 = rng_uniform(seed, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace moe
