#include "moe/dispatch.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace moe {

void dispatch_plan_init(DispatchPlan* p, int N_max, int E, int A_max) {
  p->off.assign(E + 1, 0);
  p->row_asg.assign(A_max, 0);
  p->row_tok.assign(A_max, 0);
  p->asg_row.assign(A_max, -1);
  p->tok_off.assign(static_cast<size_t>(N_max) + 1, 0);
  p->tok_asg.assign(A_max, 0);
  p->cursor.assign(std::max(E, N_max), 0);
}

void dispatch_plan_build(DispatchPlan* p, const Routing& r) {
  dispatch_plan_build_range(p, r, 0, r.N);
}

void dispatch_plan_build_range(DispatchPlan* p, const Routing& r, int t0, int t1) {
  const int N = t1 - t0, E = r.E, A = r.A;
  MOE_CHECK(0 <= t0 && t0 <= t1 && t1 <= r.N);
  MOE_CHECK(static_cast<size_t>(A) <= p->row_asg.size() && static_cast<size_t>(E) + 1 == p->off.size());
  MOE_CHECK(static_cast<size_t>(N) + 1 <= p->tok_off.size());
  p->N = N;
  p->E = E;
  p->A = A;
  const auto mine = [&](int a) { return r.tok[a] >= t0 && r.tok[a] < t1; };
  // Rows: counting sort of the kept assignments by expert, stable.
  int32_t* off = p->off.data();
  std::fill(off, off + E + 1, 0);
  for (int a = 0; a < A; ++a)
    if (r.kept[a] && mine(a)) ++off[r.expert[a] + 1];
  for (int e = 0; e < E; ++e) off[e + 1] += off[e];
  p->rows = off[E];
  int32_t* fill = p->cursor.data();
  std::copy(off, off + E, fill);
  for (int a = 0; a < A; ++a) {
    if (!r.kept[a] || !mine(a)) {
      p->asg_row[a] = -1;
      continue;
    }
    const int32_t row = fill[r.expert[a]]++;
    p->row_asg[row] = a;
    p->row_tok[row] = r.tok[a] - t0;
    p->asg_row[a] = row;
  }
  // Each token's assignments (kept or not), stable.
  int32_t* toff = p->tok_off.data();
  std::fill(toff, toff + N + 1, 0);
  for (int a = 0; a < A; ++a)
    if (mine(a)) ++toff[r.tok[a] - t0 + 1];
  for (int t = 0; t < N; ++t) toff[t + 1] += toff[t];
  std::copy(toff, toff + N, fill);
  for (int a = 0; a < A; ++a)
    if (mine(a)) p->tok_asg[fill[r.tok[a] - t0]++] = a;
}

namespace {

class LocalDispatcher final : public Dispatcher {
 public:
  ExpertSegments dispatch(const DispatchPlan& p, const float* x, int D, float* xs) override {
    for (int row = 0; row < p.rows; ++row)
      std::memcpy(xs + static_cast<int64_t>(row) * D, x + static_cast<int64_t>(p.row_tok[row]) * D,
                  sizeof(float) * D);
    return ExpertSegments{0, p.E, p.off.data()};
  }

  void combine(const DispatchPlan& p, const float* w, const float* ys, int D,
               float* out) override {
    for (int t = 0; t < p.N; ++t) {
      float* o = out + static_cast<int64_t>(t) * D;
      std::fill(o, o + D, 0.0f);
      for (int j = p.tok_off[t]; j < p.tok_off[t + 1]; ++j) {
        const int32_t a = p.tok_asg[j], row = p.asg_row[a];
        if (row < 0) continue;
        const float wa = w[a];
        const float* y = ys + static_cast<int64_t>(row) * D;
        for (int i = 0; i < D; ++i) o[i] += wa * y[i];
      }
    }
  }

  void combine_backward(const DispatchPlan& p, const float* w, const float* ys, const float* dout,
                        int D, float* dys, float* dw) override {
    for (int a = 0; a < p.A; ++a) {
      const int32_t row = p.asg_row[a];
      dw[a] = 0.0f;
      if (row < 0) continue;
      const float* go = dout + static_cast<int64_t>(p.row_tok[row]) * D;
      const float* y = ys + static_cast<int64_t>(row) * D;
      float* dy = dys + static_cast<int64_t>(row) * D;
      float s = 0.0f;
      for (int i = 0; i < D; ++i) {
        s += go[i] * y[i];
        dy[i] = w[a] * go[i];
      }
      dw[a] = s;
    }
  }

  void dispatch_backward(const DispatchPlan& p, const float* dxs, int D, float* dx) override {
    std::fill(dx, dx + static_cast<int64_t>(p.N) * D, 0.0f);
    for (int row = 0; row < p.rows; ++row) {
      float* d = dx + static_cast<int64_t>(p.row_tok[row]) * D;
      const float* s = dxs + static_cast<int64_t>(row) * D;
      for (int i = 0; i < D; ++i) d[i] += s[i];
    }
  }
};

}  // namespace

Dispatcher& local_dispatcher() {
  static LocalDispatcher d;
  return d;
}

}  // namespace moe
