// Balanced token-to-expert assignment for the BASE and Sinkhorn routers (router.h).
//
// balanced_assignment: each of N tokens goes to one of E experts, expert e taking exactly
// cap_e = floor(N/E) + (e < N mod E) tokens, maximising the total score sum_t s[t, e_t]. It is the
// linear assignment problem of N tokens and N expert slots, solved by Bertsekas' auction algorithm
// with epsilon scaling (as BASE layers do; Lewis et al. 2021):
//  - the scores are quantised to integers a = round((s - min s) * 2^20 / (max s - min s)) and
//    multiplied by N + 1; with a final epsilon of 1, the auction's epsilon-complementary slackness
//    bounds the total's shortfall by N < N + 1, the spacing of distinct totals, so the assignment
//    is EXACTLY optimal for the quantised scores (within N * (max s - min s) / 2^21 of the float
//    optimum);
//  - every slot has its own price; a token bids for the cheapest slot of its best expert, raising
//    that price by (best value - second best value + epsilon); each expert keeps its slots' prices
//    in a min-heap, so a bid costs O(E + log N);
//  - epsilon starts at a fifth of the score range and shrinks 5x per phase down to 1, keeping the
//    prices between phases.
// sinkhorn_scaling: Megatron-Core's sinkhorn(): with C = exp(s), alternately
//   d0 = (1/N) / (C d1 + 1e-8),  d1 = (1/E) / (C^T d0 + 1e-8)
// until mean |d1 - d1_prev| <= tol; the balanced matrix is diag(d0) C diag(d1). Here C =
// exp(s - max s) (the same d1, as the max cancels out of d1 up to the 1e-8 terms), and the
// iterations are capped at max_iters so that a call is bounded in time.
//
// Legend: N tokens, E experts.
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

// Scratch of both solvers for up to N_max tokens and E experts, allocated once.
struct AssignWork {
  std::vector<int64_t> benefit;  // (N_max, E) quantised scores times N + 1
  std::vector<int64_t> price;    // (N_max) price of each slot
  std::vector<int32_t> owner;    // (N_max) token holding each slot, -1 = free
  std::vector<int32_t> heap;     // (N_max) each expert's slots, a min-heap by price in its range
  std::vector<int32_t> slot_off; // (E + 1) first slot of each expert
  std::vector<int32_t> queue;    // (N_max) tokens without a slot
  std::vector<double> cost;      // (N_max, E) Sinkhorn's exp(s - max s)
  std::vector<double> d0;        // (N_max) Sinkhorn row scaling
  std::vector<double> d1;        // (E) Sinkhorn column scaling
  std::vector<double> colsum;    // (E) Sinkhorn column sums
  int64_t bids = 0;              // bids of the last auction
  int iters = 0;                 // iterations of the last Sinkhorn call
};

void assign_work_init(AssignWork* w, int N_max, int E);

// The capacity of expert e for N tokens: floor(N/E) + (e < N mod E).
inline int balanced_capacity(int N, int E, int e) { return N / E + (e < N % E ? 1 : 0); }

// scores (N, E) (NaN counts as the lowest score); writes expert (N), each token's expert.
void balanced_assignment(const float* scores, int N, int E, int32_t* expert, AssignWork* w);

// scores (N, E); writes log_d1 (E) = log of the column scaling, so that row t of the balanced
// matrix ranks experts as scores[t, e] + log_d1[e]. Returns the iterations run.
int sinkhorn_scaling(const float* scores, int N, int E, float* log_d1, AssignWork* w,
                     double tol = 1e-4, int max_iters = 1000);

}  // namespace moe
