#include "ops/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace moe {

namespace {

constexpr int64_t kLevels = int64_t{1} << 20;  // quantisation levels of the score range
constexpr int64_t kNone = std::numeric_limits<int64_t>::min();

// Restores the min-heap of one expert (slots heap[lo, lo + n)) after the price of the slot at
// relative position i went up.
void heap_sift_down(AssignWork* w, int lo, int n, int i) {
  int32_t* h = w->heap.data();
  const int64_t* p = w->price.data();
  while (true) {
    const int l = 2 * i + 1, r = l + 1;
    int m = i;
    if (l < n && p[h[lo + l]] < p[h[lo + m]]) m = l;
    if (r < n && p[h[lo + r]] < p[h[lo + m]]) m = r;
    if (m == i) return;
    std::swap(h[lo + i], h[lo + m]);
    i = m;
  }
}

// Quantised benefits (N, E): round((s - min) / (max - min) * 2^20) * (N + 1); NaN -> 0.
void quantise(const float* s, int N, int E, AssignWork* w) {
  const int64_t NE = static_cast<int64_t>(N) * E;
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < NE; ++i)
    if (std::isfinite(s[i])) lo = std::min(lo, static_cast<double>(s[i])), hi = std::max(hi, static_cast<double>(s[i]));
  const double range = hi - lo;
  const double q = range > 0 && std::isfinite(range) ? static_cast<double>(kLevels) / range : 0.0;
  for (int64_t i = 0; i < NE; ++i) {
    const double v = std::isnan(s[i]) ? lo : std::min(std::max(static_cast<double>(s[i]), lo), hi);
    const int64_t a = q > 0 ? std::llround((v - lo) * q) : 0;
    w->benefit[i] = a * (N + 1);
  }
}

// One auction phase at epsilon eps: every token bids until all hold a slot.
void auction_phase(int N, int E, int64_t eps, int32_t* expert, AssignWork* w) {
  std::fill(w->owner.begin(), w->owner.begin() + N, -1);
  int n_queue = 0;
  for (int t = N - 1; t >= 0; --t) w->queue[n_queue++] = t;  // token 0 bids first
  const int32_t* off = w->slot_off.data();
  while (n_queue > 0) {
    const int t = w->queue[--n_queue];
    const int64_t* b = w->benefit.data() + static_cast<int64_t>(t) * E;
    int best = -1;
    int64_t v1 = kNone, v2 = kNone;
    for (int e = 0; e < E; ++e) {
      if (off[e + 1] == off[e]) continue;
      const int64_t v = b[e] - w->price[w->heap[off[e]]];
      if (v > v1) v2 = v1, v1 = v, best = e;
      else if (v > v2) v2 = v;
    }
    const int lo = off[best], n = off[best + 1] - off[best];
    if (n >= 2) {  // the best expert's second-cheapest slot is an alternative too
      int64_t p2 = w->price[w->heap[lo + 1]];
      if (n >= 3) p2 = std::min(p2, w->price[w->heap[lo + 2]]);
      v2 = std::max(v2, b[best] - p2);
    }
    const int32_t slot = w->heap[lo];
    w->price[slot] += (v2 == kNone ? 0 : v1 - v2) + eps;
    if (w->owner[slot] >= 0) w->queue[n_queue++] = w->owner[slot];
    w->owner[slot] = t;
    expert[t] = best;
    heap_sift_down(w, lo, n, 0);
    ++w->bids;
  }
}

}  // namespace

void assign_work_init(AssignWork* w, int N_max, int E) {
  MOE_CHECK(N_max > 0 && E > 0);
  const size_t N = static_cast<size_t>(N_max), NE = N * static_cast<size_t>(E);
  w->benefit.assign(NE, 0);
  w->price.assign(N, 0);
  w->owner.assign(N, -1);
  w->heap.assign(N, 0);
  w->slot_off.assign(E + 1, 0);
  w->queue.assign(N, 0);
  w->cost.assign(NE, 0.0);
  w->d0.assign(N, 0.0);
  w->d1.assign(E, 0.0);
  w->colsum.assign(E, 0.0);
}

void balanced_assignment(const float* scores, int N, int E, int32_t* expert, AssignWork* w) {
  MOE_CHECK(N > 0 && E > 0 && static_cast<size_t>(N) <= w->price.size() &&
            static_cast<size_t>(E) + 1 == w->slot_off.size());
  quantise(scores, N, E, w);
  for (int e = 0; e < E; ++e) w->slot_off[e + 1] = w->slot_off[e] + balanced_capacity(N, E, e);
  for (int j = 0; j < N; ++j) w->heap[j] = j;  // all prices 0: a valid heap
  std::fill(w->price.begin(), w->price.begin() + N, 0);
  w->bids = 0;
  const int64_t range = kLevels * (N + 1);
  for (int64_t eps = std::max<int64_t>(1, range / 5);; eps = std::max<int64_t>(1, eps / 5)) {
    auction_phase(N, E, eps, expert, w);
    if (eps == 1) break;
  }
}

int sinkhorn_scaling(const float* scores, int N, int E, float* log_d1, AssignWork* w, double tol,
                     int max_iters) {
  MOE_CHECK(N > 0 && E > 0 && static_cast<size_t>(N) <= w->d0.size());
  const int64_t NE = static_cast<int64_t>(N) * E;
  double mx = -INFINITY;
  for (int64_t i = 0; i < NE; ++i)
    if (std::isfinite(scores[i])) mx = std::max(mx, static_cast<double>(scores[i]));
  const double shift = std::isfinite(mx) && mx > 80.0 ? mx - 80.0 : 0.0;  // exp stays finite
  for (int64_t i = 0; i < NE; ++i)
    w->cost[i] = std::isfinite(scores[i]) ? std::exp(static_cast<double>(scores[i]) - shift) : 0.0;
  double* d0 = w->d0.data();
  double* d1 = w->d1.data();
  std::fill(d1, d1 + E, 1.0);
  double err = INFINITY;
  int it = 0;
  for (; it < max_iters && err > tol; ++it) {
    for (int t = 0; t < N; ++t) {
      const double* c = w->cost.data() + static_cast<int64_t>(t) * E;
      double s = 0.0;
      for (int e = 0; e < E; ++e) s += d1[e] * c[e];
      d0[t] = (1.0 / N) / (s + 1e-8);
    }
    double* col = w->colsum.data();
    std::fill(col, col + E, 0.0);
    for (int t = 0; t < N; ++t) {
      const double* c = w->cost.data() + static_cast<int64_t>(t) * E;
      for (int e = 0; e < E; ++e) col[e] += d0[t] * c[e];
    }
    err = 0.0;
    for (int e = 0; e < E; ++e) {
      const double nd = (1.0 / E) / (col[e] + 1e-8);
      err += std::fabs(nd - d1[e]);
      d1[e] = nd;
    }
    err /= E;
  }
  for (int e = 0; e < E; ++e) log_d1[e] = static_cast<float>(std::log(d1[e]));
  w->iters = it;
  return it;
}

}  // namespace moe
