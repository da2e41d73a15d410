#include "moe/ep_dispatch.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/clock.h"
#include "core/error.h"

namespace moe {

EpDispatcher::EpDispatcher(Comm* comm, int E, int D, int max_rows, int max_recv)
    : comm_(comm), E_(E), D_(D), P_(comm->size()), me_(comm->rank()), max_rows_(max_rows),
      max_recv_(max_recv) {
  MOE_CHECK(E > 0 && D > 0 && max_rows >= 0 && max_recv >= 0);
  e0_ = ep_expert_begin(E, P_, me_);
  ne_ = ep_expert_begin(E, P_, me_ + 1) - e0_;
  srows_.assign(P_, 0);
  rrows_.assign(P_, 0);
  sbytes_.assign(P_, 0);
  rbytes_.assign(P_, 0);
  scnt_.assign(E, 0);
  rcnt_.assign(static_cast<size_t>(P_) * ne_, 0);
  seg_off_.assign(ne_ + 1, 0);
  grouped_.assign(max_recv, 0);
  fill_.assign(ne_, 0);
  cbytes_.assign(P_, 0);
  crbytes_.assign(P_, 0);
  send_.assign(static_cast<size_t>(max_rows) * D, 0.0f);
  recv_.assign(static_cast<size_t>(max_recv) * D, 0.0f);
  back_.assign(static_cast<size_t>(max_rows) * D, 0.0f);
}

ExpertSegments EpDispatcher::dispatch(const DispatchPlan& p, const float* x, int D, float* xs) {
  dispatch_begin(p, x, D);
  return dispatch_end(xs);
}

void EpDispatcher::dispatch_begin(const DispatchPlan& p, const float* x, int D) {
  MOE_CHECK(D == D_ && p.E == E_ && p.rows <= max_rows_ && !pending_);
  rows_ = p.rows;
  // 1. Rows per expert, sent to each expert's rank: rank q gets the counts of its experts.
  for (int e = 0; e < E_; ++e) scnt_[e] = p.off[e + 1] - p.off[e];
  for (int q = 0; q < P_; ++q) {
    const int b = ep_expert_begin(E_, P_, q), en = ep_expert_begin(E_, P_, q + 1);
    cbytes_[q] = static_cast<int64_t>(en - b) * sizeof(int32_t);
    crbytes_[q] = static_cast<int64_t>(ne_) * sizeof(int32_t);
    srows_[q] = p.off[en] - p.off[b];
  }
  const double t0 = now_s();
  comm_->alltoallv(scnt_.data(), cbytes_.data(), rcnt_.data(), crbytes_.data());
  comm_s_ += now_s() - t0;
  // 2. Grouped segments of this rank's experts: by expert, then source rank.
  std::fill(seg_off_.begin(), seg_off_.end(), 0);
  rows_recv_ = 0;
  for (int q = 0; q < P_; ++q) {
    rrows_[q] = 0;
    for (int i = 0; i < ne_; ++i) {
      const int32_t c = rcnt_[static_cast<size_t>(q) * ne_ + i];
      seg_off_[i + 1] += c;
      rrows_[q] += c;
    }
    rows_recv_ += static_cast<int>(rrows_[q]);
  }
  if (rows_recv_ > max_recv_)
    fail("expert parallelism: rank %d received %d rows for its experts, more than the %d its "
         "buffers hold", me_, rows_recv_, max_recv_);
  for (int i = 0; i < ne_; ++i) seg_off_[i + 1] += seg_off_[i];
  std::copy(seg_off_.begin(), seg_off_.end() - 1, fill_.begin());
  int j = 0;
  for (int q = 0; q < P_; ++q)
    for (int i = 0; i < ne_; ++i)
      for (int32_t k = 0; k < rcnt_[static_cast<size_t>(q) * ne_ + i]; ++k) grouped_[j++] = fill_[i]++;
  // 3. The rows themselves.
  for (int row = 0; row < p.rows; ++row)
    std::memcpy(send_.data() + static_cast<int64_t>(row) * D,
                x + static_cast<int64_t>(p.row_tok[row]) * D, sizeof(float) * D);
  post_rows(send_.data(), D);
}

ExpertSegments EpDispatcher::dispatch_end(float* xs) {
  wait_s_ += complete_rows(D_, xs);
  return ExpertSegments{e0_, ne_, seg_off_.data()};
}

void EpDispatcher::forward_rows(const float* send, int D, float* grouped) {
  post_rows(send, D);
  complete_rows(D, grouped);
}

double EpDispatcher::complete_rows(int D, float* grouped) {
  MOE_CHECK(pending_);
  const double t0 = now_s();
  pending_->wait();
  pending_.reset();
  const double dt = now_s() - t0;
  comm_s_ += dt;
  group_rows(D, grouped);
  return dt;
}

void EpDispatcher::post_rows(const float* send, int D) {
  sent_ = received_ = 0;
  for (int q = 0; q < P_; ++q) {
    sbytes_[q] = srows_[q] * D * static_cast<int64_t>(sizeof(float));
    rbytes_[q] = rrows_[q] * D * static_cast<int64_t>(sizeof(float));
    if (q != me_) {
      sent_ += sbytes_[q];
      received_ += rbytes_[q];
    }
  }
  const double t0 = now_s();
  pending_ = comm_->ialltoallv(send, sbytes_.data(), recv_.data(), rbytes_.data());
  comm_s_ += now_s() - t0;
}

void EpDispatcher::group_rows(int D, float* grouped) {
  for (int j = 0; j < rows_recv_; ++j)
    std::memcpy(grouped + static_cast<int64_t>(grouped_[j]) * D,
                recv_.data() + static_cast<int64_t>(j) * D, sizeof(float) * D);
}

void EpDispatcher::reverse_rows(const float* grouped, int D, float* back) {
  for (int j = 0; j < rows_recv_; ++j)
    std::memcpy(recv_.data() + static_cast<int64_t>(j) * D,
                grouped + static_cast<int64_t>(grouped_[j]) * D, sizeof(float) * D);
  const double t0 = now_s();
  comm_->alltoallv(recv_.data(), rbytes_.data(), back, sbytes_.data());
  comm_s_ += now_s() - t0;
}

void EpDispatcher::combine(const DispatchPlan& p, const float* w, const float* ys, int D,
                           float* out) {
  MOE_CHECK(p.rows == rows_);
  reverse_rows(ys, D, back_.data());
  local_dispatcher().combine(p, w, back_.data(), D, out);
}

void EpDispatcher::combine_backward(const DispatchPlan& p, const float* w, const float* ys,
                                    const float* dout, int D, float* dys, float* dw) {
  MOE_CHECK(p.rows == rows_);
  // The row gradients of this rank's rows (plan order), from the outputs that came back.
  local_dispatcher().combine_backward(p, w, back_.data(), dout, D, send_.data(), dw);
  forward_rows(send_.data(), D, dys);
}

void EpDispatcher::dispatch_backward(const DispatchPlan& p, const float* dxs, int D, float* dx) {
  MOE_CHECK(p.rows == rows_);
  reverse_rows(dxs, D, send_.data());
  local_dispatcher().dispatch_backward(p, send_.data(), D, dx);
}

}  // namespace moe
