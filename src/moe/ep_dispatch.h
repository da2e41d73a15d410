// Expert parallelism: the routed experts of a layer split over the P ranks of a communicator, and
// the dispatcher that moves each row to its expert's rank and back with all-to-all-v.
//
// Placement: dist/placement.h (contiguous blocks of experts per rank).
//
// One call, on every rank of the group (each with its own dispatch plan: the rows of its tokens,
// sorted by expert, so the rows for one destination rank are contiguous):
//   dispatch: the per-expert row counts go to the experts' ranks (all-to-all-v of int32), then the
//     rows (all-to-all-v of D floats each); a rank orders what it received by expert, then by
//     source rank, then by the source's row order, and hands the grouped FFN segments of its
//     experts.
//   combine: the expert outputs go back the same way (the reverse all-to-all-v), into this rank's
//     plan order, and are summed into the tokens as in one process.
//   backward: combine_backward sends the row gradients to the experts' ranks, dispatch_backward
//     brings the input-row gradients back.
// Every message size is known to both sides from the exchanged counts. The dispatcher keeps the
// returned expert outputs of the last call for combine_backward.
//
// Legend: P ranks, E experts, El this rank's experts, R rows of this rank's tokens (plan rows),
// Rr rows received for this rank's experts, D width.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "dist/comm.h"
#include "dist/placement.h"
#include "moe/dispatch.h"

namespace moe {

class EpDispatcher final : public Dispatcher {
 public:
  // E experts over comm's ranks, rows of width D; this rank's plans have at most max_rows rows,
  // and at most max_recv rows may arrive at this rank in one call (the capacity of the
  // ExpertBuffers the grouped FFN uses). Allocates every buffer.
  EpDispatcher(Comm* comm, int E, int D, int max_rows, int max_recv);
  ExpertSegments dispatch(const DispatchPlan& p, const float* x, int D, float* xs) override;
  // dispatch in two halves, so that other work (the shared expert) runs while the rows travel:
  // begin exchanges the counts and posts the rows (MPI_Ialltoallv); end waits and groups them.
  void dispatch_begin(const DispatchPlan& p, const float* x, int D);
  ExpertSegments dispatch_end(float* xs);
  void combine(const DispatchPlan& p, const float* w, const float* ys, int D, float* out) override;
  void combine_backward(const DispatchPlan& p, const float* w, const float* ys, const float* dout,
                        int D, float* dys, float* dw) override;
  void dispatch_backward(const DispatchPlan& p, const float* dxs, int D, float* dx) override;

  int expert_begin() const { return e0_; }
  int expert_end() const { return e0_ + ne_; }
  // Bytes this rank sent and received in the row exchanges of the last dispatch (one direction).
  int64_t bytes_sent() const { return sent_; }
  int64_t bytes_received() const { return received_; }
  int rows_received() const { return rows_recv_; }
  // The row exchange's byte counts per rank of the last dispatch (one width), and the seconds
  // spent in the row and count exchanges since the last reset (benchmarks).
  const std::vector<int64_t>& send_bytes() const { return sbytes_; }
  const std::vector<int64_t>& recv_bytes() const { return rbytes_; }
  double comm_seconds() const { return comm_s_; }
  // Seconds dispatch_end waited for the posted rows (what the overlap did not hide).
  double wait_seconds() const { return wait_s_; }
  void reset_comm_seconds() { comm_s_ = wait_s_ = 0.0; }

 private:
  // Rows (plan order) -> other ranks' experts: send_ (R, D) -> recv_ (Rr, D), then grouped into
  // out (Rr, D). The reverse: grouped in (Rr, D) -> recv_ -> back into send_ order (R, D).
  void forward_rows(const float* send, int D, float* grouped);
  void post_rows(const float* send, int D);   // forward_rows' exchange, posted
  void group_rows(int D, float* grouped);     // forward_rows' grouping of recv_
  double complete_rows(int D, float* grouped);  // waits for the posted rows, groups; seconds waited
  void reverse_rows(const float* grouped, int D, float* back);

  Comm* comm_;
  int E_, D_, P_, me_, e0_, ne_, max_rows_, max_recv_;
  int rows_ = 0, rows_recv_ = 0;
  int64_t sent_ = 0, received_ = 0;
  double comm_s_ = 0.0, wait_s_ = 0.0;
  std::unique_ptr<CommRequest> pending_;  // the posted row exchange of dispatch_begin
  std::vector<int64_t> srows_, rrows_;  // (P) rows sent to / received from each rank
  std::vector<int64_t> sbytes_, rbytes_;  // (P) the same in bytes, for one width
  std::vector<int32_t> scnt_;           // (E) rows this rank sends per expert
  std::vector<int32_t> rcnt_;           // (P, El) rows received from rank p for local expert i
  std::vector<int32_t> seg_off_;        // (El + 1) local expert i's grouped rows
  std::vector<int32_t> grouped_;        // (Rr) grouped row of the j-th received row
  std::vector<int32_t> fill_;           // (El) fill positions while grouping
  std::vector<int64_t> cbytes_, crbytes_;  // (P) bytes of the count exchange
  std::vector<float> send_, recv_;      // (R, D), (Rr, D) message buffers
  std::vector<float> back_;             // (R, D) expert outputs of this rank's rows, plan order
};

}  // namespace moe
