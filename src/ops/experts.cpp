#include "ops/experts.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/linear.h"
#include "ops/ops.h"
#include "quant/quant.h"

namespace moe {

void expert_buffers_init(ExpertBuffers* b, const ExpertFfnSpec& f, int E, int R_max, bool train) {
  const int64_t D = f.hidden, R = R_max;
  const int64_t F = std::max(f.ffn, 1), Wd = std::max(D, F);
  b->xs.assign(R * D, 0.0f);
  b->g.assign(R * F, 0.0f);
  b->u.assign(R * F, 0.0f);
  b->ys.assign(R * D, 0.0f);
  const auto q8_bytes = [](int64_t n) { return (n + kQBlock - 1) / kQBlock * kQ8xBytes; };
  b->deq_rows = static_cast<int>(std::min<int64_t>(Wd, std::max<int64_t>(32, (1 << 20) / Wd)));
  b->xq.assign(R * q8_bytes(D), 0);
  b->hq.assign(R * q8_bytes(F), 0);
  b->wdeq.assign(static_cast<int64_t>(b->deq_rows) * Wd, 0.0f);
  b->dot_experts.assign(std::max(E, 1), 0);
  if (train) {
    b->act.assign(R * F, 0.0f);
    b->dys.assign(R * D, 0.0f);
    b->dact.assign(R * F, 0.0f);
    b->dg.assign(R * F, 0.0f);
    b->du.assign(R * F, 0.0f);
    b->dxs.assign(R * D, 0.0f);
    b->tmp.assign(R * D, 0.0f);
  } else {
    b->act.clear();
    b->dys.clear();
    b->dact.clear();
    b->dg.clear();
    b->du.clear();
    b->dxs.clear();
    b->tmp.clear();
  }
}

void expert_act_forward(const ExpertFfnSpec& f, float* h, const float* g, const float* u,
                        int64_t n) {
  if (f.act == ACT_SWIGLU) {
    for (int64_t i = 0; i < n; ++i) h[i] = op_silu(g[i]) * u[i];
    return;
  }
  const float lim = f.limit, alpha = f.alpha;
  for (int64_t i = 0; i < n; ++i) {
    const float gv = std::min(g[i], lim);
    const float uv = std::min(lim, std::max(-lim, u[i]));
    h[i] = (uv + 1.0f) * (gv * op_sigmoid(alpha * gv));
  }
}

void expert_act_backward(const ExpertFfnSpec& f, float* dg, float* du, const float* dh,
                         const float* g, const float* u, int64_t n) {
  if (f.act == ACT_SWIGLU) {
    op_swiglu_backward(dg, du, dh, g, u, n);
    return;
  }
  // The clamps pass the gradient where the input lies inside them (bounds included).
  const float lim = f.limit, alpha = f.alpha;
  for (int64_t i = 0; i < n; ++i) {
    const float gv = std::min(g[i], lim);
    const float uv = std::min(lim, std::max(-lim, u[i]));
    const float s = op_sigmoid(alpha * gv);
    const float glu = gv * s;
    const float dglu = s + gv * alpha * s * (1.0f - s);
    dg[i] = g[i] <= lim ? dh[i] * (uv + 1.0f) * dglu : 0.0f;
    du[i] = (u[i] >= -lim && u[i] <= lim) ? dh[i] * glu : 0.0f;
  }
}

namespace {

bool is_raw(const ExpertWeights& ew) { return !ew.gate || !ew.up || !ew.down; }

// The type of an expert's raw matrices.
QType raw_type(const ExpertWeights& ew) { return ew.gate ? ew.down_q.type : ew.gate_q.type; }

// y (n, N) = x (n, K) W^T + b for one expert matrix of any storage.
void expert_matmul(float* y, const float* x, const float* w, const QWeight& q, const float* b,
                   int n, int N, int K, ExpertBuffers* s) {
  if (w) op_linear(y, x, w, b, n, N, K);
  else raw_gemm(y, x, q, b, n, N, K, s->wdeq.data(), s->deq_rows);
}

// The experts listed in b->dot_experts (short segments with raw matrices), row by row through
// the dot kernels, in one parallel region: quantize inputs, gate/up rows, activation (and
// quantization of its output), down rows. Each stage splits (expert, block of output rows); a
// work item takes its expert's tokens kTok at a time, each weight row against all of them.
void experts_dot(const ExpertFfnSpec& f, const ExpertWeights* experts, const ExpertSegments& seg,
                 ExpertBuffers* b, int n_dot) {
  const int D = f.hidden, F = f.ffn;
  constexpr int kRows = 16;  // output rows per work item
  constexpr int kTok = 4;    // tokens per multi-activation dot (quant.h dot4_*)
  const int64_t xrb = (D + kQBlock - 1) / kQBlock * kQ8xBytes;  // Q8X bytes of an input row
  const int64_t hrb = (F + kQBlock - 1) / kQBlock * kQ8xBytes;  // Q8X bytes of an activation row
  const int64_t nbF = (F + kRows - 1) / kRows, nbD = (D + kRows - 1) / kRows;
  const QKernels& k = qkernels();
  const int32_t* off = seg.off;             // (n + 1), indexed by e - e0
  const int32_t* dot = b->dot_experts.data();
  const int e0 = seg.e0;
  const float* xs = b->xs.data();  // (R, D)
  uint8_t* xq = b->xq.data();      // (R, xrb)
  uint8_t* hq = b->hq.data();      // (R, hrb)
  float* g = b->g.data();          // (R, F)
  float* u = b->u.data();          // (R, F)
  float* ys = b->ys.data();        // (R, D)
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int i = 0; i < n_dot; ++i) {
      const ExpertWeights& ew = experts[dot[i]];
      if (!qtype_is_block(ew.gate_q.type) && !qtype_is_block(ew.up_q.type)) continue;
      for (int p = off[dot[i] - e0]; p < off[dot[i] - e0 + 1]; ++p)
        k.quantize_q8x(xs + static_cast<int64_t>(p) * D, xq + p * xrb, D);
    }
#pragma omp for schedule(static)
    for (int64_t w = 0; w < n_dot * nbF; ++w) {
      const int e = dot[w / nbF];
      const ExpertWeights& ew = experts[e];
      const int r0 = static_cast<int>(w % nbF) * kRows, r1 = std::min(F, r0 + kRows);
      const int p0 = off[e - e0], p1 = off[e - e0 + 1];
      for (int p = p0; p < p1; p += kTok) {
        const int na = std::min(kTok, p1 - p);
        const float* x = xs + static_cast<int64_t>(p) * D;
        // Gate and up rows alternate (two weight streams in flight).
        for (int r = r0; r < r1; ++r) {
          linear_rows_dot(k, ew.gate, ew.gate_q, ew.gate_b, r, r + 1, x, xq + p * xrb, xrb, na, D,
                          g + static_cast<int64_t>(p) * F, F);
          linear_rows_dot(k, ew.up, ew.up_q, ew.up_b, r, r + 1, x, xq + p * xrb, xrb, na, D,
                          u + static_cast<int64_t>(p) * F, F);
        }
      }
    }
#pragma omp for schedule(static)
    for (int i = 0; i < n_dot; ++i) {
      const ExpertWeights& ew = experts[dot[i]];
      for (int p = off[dot[i] - e0]; p < off[dot[i] - e0 + 1]; ++p) {
        float* gp = g + static_cast<int64_t>(p) * F;
        expert_act_forward(f, gp, gp, u + static_cast<int64_t>(p) * F, F);
        if (qtype_is_block(ew.down_q.type)) k.quantize_q8x(gp, hq + p * hrb, F);
      }
    }
#pragma omp for schedule(static)
    for (int64_t w = 0; w < n_dot * nbD; ++w) {
      const int e = dot[w / nbD];
      const ExpertWeights& ew = experts[e];
      const int r0 = static_cast<int>(w % nbD) * kRows, r1 = std::min(D, r0 + kRows);
      const int p0 = off[e - e0], p1 = off[e - e0 + 1];
      for (int p = p0; p < p1; p += kTok) {
        const int na = std::min(kTok, p1 - p);
        linear_rows_dot(k, ew.down, ew.down_q, ew.down_b, r0, r1, g + static_cast<int64_t>(p) * F,
                        hq + p * hrb, hrb, na, F, ys + static_cast<int64_t>(p) * D, D);
      }
    }
  }
}

}  // namespace

void experts_forward(ExpertBuffers* b, const ExpertFfnSpec& f, const ExpertWeights* experts,
                     const ExpertSegments& seg, bool save) {
  const int D = f.hidden, F = f.ffn;
  const auto rows = [&](int i) { return seg.off[i + 1] - seg.off[i]; };
  const auto use_dot = [&](int i) {
    const ExpertWeights& ew = experts[seg.e0 + i];
    return !save && rows(i) > 0 && is_raw(ew) && rows(i) <= expert_dot_max_tokens(*b, raw_type(ew));
  };
  int n_dot = 0;
  for (int i = 0; i < seg.n; ++i)
    if (use_dot(i)) b->dot_experts[n_dot++] = seg.e0 + i;
  if (n_dot > 0) experts_dot(f, experts, seg, b, n_dot);
  for (int i = 0; i < seg.n; ++i) {
    const int n = rows(i);
    if (n == 0 || use_dot(i)) continue;
    const ExpertWeights& ew = experts[seg.e0 + i];
    if (save && is_raw(ew)) fail("training needs fp32 expert weights (expert %d is stored raw)", seg.e0 + i);
    const int64_t o = seg.off[i];
    const float* xe = b->xs.data() + o * D;
    float* g = b->g.data() + o * F;
    float* u = b->u.data() + o * F;
    float* h = save ? b->act.data() + o * F : g;
    expert_matmul(g, xe, ew.gate, ew.gate_q, ew.gate_b, n, F, D, b);
    expert_matmul(u, xe, ew.up, ew.up_q, ew.up_b, n, F, D, b);
    expert_act_forward(f, h, g, u, static_cast<int64_t>(n) * F);
    expert_matmul(b->ys.data() + o * D, h, ew.down, ew.down_q, ew.down_b, n, D, F, b);
  }
}

void experts_backward(ExpertBuffers* b, const ExpertFfnSpec& f, const ExpertWeights* experts,
                      const ExpertWeights* grads, const ExpertSegments& seg) {
  const int D = f.hidden, F = f.ffn;
  auto wr = [](const float* p) { return const_cast<float*>(p); };  // gradient arenas are writable
  for (int i = 0; i < seg.n; ++i) {
    const int n = seg.off[i + 1] - seg.off[i];
    if (n == 0) continue;
    const ExpertWeights& ew = experts[seg.e0 + i];
    const ExpertWeights& eg = grads[seg.e0 + i];
    const int64_t o = seg.off[i];
    const int64_t nF = static_cast<int64_t>(n) * F;
    float* dact = b->dact.data();
    op_linear_backward(dact, wr(eg.down), wr(eg.down_b), b->dys.data() + o * D,
                       b->act.data() + o * F, ew.down, n, D, F);
    expert_act_backward(f, b->dg.data(), b->du.data(), dact, b->g.data() + o * F,
                        b->u.data() + o * F, nF);
    float* dxs = b->dxs.data() + o * D;
    op_linear_backward(dxs, wr(eg.gate), wr(eg.gate_b), b->dg.data(), b->xs.data() + o * D,
                       ew.gate, n, F, D);
    op_linear_backward(b->tmp.data(), wr(eg.up), wr(eg.up_b), b->du.data(), b->xs.data() + o * D,
                       ew.up, n, F, D);
    for (int64_t j = 0; j < static_cast<int64_t>(n) * D; ++j) dxs[j] += b->tmp[j];
  }
}

}  // namespace moe
