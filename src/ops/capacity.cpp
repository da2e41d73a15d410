#include "ops/capacity.h"

#include <algorithm>
#include <cmath>

namespace moe {

int64_t capacity_for(int64_t N, int K, int E, double capacity_factor) {
  if (capacity_factor <= 0.0 || E <= 0) return 0;
  return static_cast<int64_t>(std::ceil(static_cast<double>(N) * K / E * capacity_factor));
}

int64_t capacity_apply(const int32_t* tok, const int32_t* expert, const float* w, int64_t A, int E,
                       int64_t cap, char* kept, int64_t* dropped_per_expert, int32_t* work) {
  std::fill(kept, kept + A, 1);
  if (dropped_per_expert) std::fill(dropped_per_expert, dropped_per_expert + E, 0);
  if (cap <= 0 || A == 0) return 0;
  int32_t* off = work;              // (E + 1) segment offsets
  int32_t* fill = off + E + 1;      // (E) fill positions
  int32_t* order = fill + E;        // (A) assignments by expert, in assignment order
  std::fill(off, off + E + 1, 0);
  for (int64_t a = 0; a < A; ++a) ++off[expert[a] + 1];
  for (int e = 0; e < E; ++e) off[e + 1] += off[e];
  std::copy(off, off + E, fill);
  for (int64_t a = 0; a < A; ++a) order[fill[expert[a]]++] = static_cast<int32_t>(a);
  // Highest weight first; NaN below every number; ties: lower token, then lower assignment.
  const auto before = [&](int32_t x, int32_t y) {
    const bool nx = std::isnan(w[x]), ny = std::isnan(w[y]);
    if (nx != ny) return ny;
    if (!nx && w[x] != w[y]) return w[x] > w[y];
    if (tok[x] != tok[y]) return tok[x] < tok[y];
    return x < y;
  };
  int64_t dropped = 0;
  for (int e = 0; e < E; ++e) {
    int32_t* b = order + off[e];
    const int64_t n = off[e + 1] - off[e];
    if (n <= cap) continue;
    std::sort(b, b + n, before);
    for (int64_t i = cap; i < n; ++i) kept[b[i]] = 0;
    if (dropped_per_expert) dropped_per_expert[e] = n - cap;
    dropped += n - cap;
  }
  return dropped;
}

}  // namespace moe
