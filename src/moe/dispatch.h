// Dispatch and combine: the stages of the MoE layer between routing and the experts.
//
//   route (router.h) -> dispatch plan (here) -> dispatch -> grouped expert FFN (experts.h)
//                    -> combine
//
// The dispatch plan is built once per call from a Routing: each expert's kept assignments form a
// contiguous segment of rows (stable: assignment order within an expert), and each token lists its
// assignments in assignment order, so that the combine sums a token's expert outputs in a fixed
// order whatever the threading. Dropped assignments (capacity, capacity.h) get no row.
//
// A Dispatcher moves the rows: dispatch gathers each row's token input to where its expert runs,
// combine brings the expert outputs back and sums them into their tokens with the routing weights;
// their backward passes mirror them. The local dispatcher (every expert in this process) is the
// only one today; an expert-parallel one exchanges the rows between processes behind the same
// interface, and reports in ExpertSegments which experts' rows this process then holds.
//
// Legend: N tokens, E experts, A assignments (kept or not), R rows (kept assignments), D width.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/experts.h"
#include "ops/router.h"

namespace moe {

struct DispatchPlan {
  int N = 0, E = 0;
  int A = 0;                     // assignments of the routing
  int rows = 0;                  // kept assignments
  std::vector<int32_t> off;      // (E + 1) expert e's rows are [off[e], off[e + 1])
  std::vector<int32_t> row_asg;  // (A_max) assignment of each row
  std::vector<int32_t> row_tok;  // (A_max) token of each row
  std::vector<int32_t> asg_row;  // (A_max) row of each assignment, -1 if dropped
  std::vector<int32_t> tok_off;  // (N_max + 1) token t's assignments: tok_asg[tok_off[t]..)
  std::vector<int32_t> tok_asg;  // (A_max) assignments grouped by token, in assignment order
  std::vector<int32_t> cursor;   // (max(E, N_max)) fill positions while building
};

void dispatch_plan_init(DispatchPlan* p, int N_max, int E, int A_max);
// Builds the plan of a routing (its kept assignments).
void dispatch_plan_build(DispatchPlan* p, const Routing& r);
// The plan of the tokens [t0, t1) of a routing only (an expert-parallel rank's share), renumbered
// from 0 (N = t1 - t0); assignment indices stay those of the routing (A = r.A), with row -1 for
// the other tokens' assignments.
void dispatch_plan_build_range(DispatchPlan* p, const Routing& r, int t0, int t1);

class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // xs (rows held, D) = the input row x[token] of each row held here. x: (N, D).
  virtual ExpertSegments dispatch(const DispatchPlan& p, const float* x, int D,
                                  float* xs) = 0;
  // out (N, D) = sum over each token's kept assignments a, in assignment order, of
  // w[a] * ys[row(a)]; zero for a token without any. w: (A) routing weights.
  virtual void combine(const DispatchPlan& p, const float* w, const float* ys, int D,
                       float* out) = 0;
  // From dout (N, D): dys (rows, D) = w[a] * dout[token] for each row; dw (A) = <dout[token],
  // ys[row]> for kept assignments, 0 for dropped ones.
  virtual void combine_backward(const DispatchPlan& p, const float* w, const float* ys,
                                const float* dout, int D, float* dys, float* dw) = 0;
  // dx (N, D) = sum of the row gradients dxs (rows, D) into their tokens (overwrites dx).
  virtual void dispatch_backward(const DispatchPlan& p, const float* dxs, int D,
                                 float* dx) = 0;
};

// Every expert in this process (stateless).
Dispatcher& local_dispatcher();

}  // namespace moe
