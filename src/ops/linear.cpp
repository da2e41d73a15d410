#include "ops/linear.h"

#include <omp.h>

#include <algorithm>

#include "core/error.h"
#include "ops/ops.h"
#include "quant/quant.h"

namespace moe {

namespace {

int64_t q8x_row_bytes(int64_t K) { return (K + kQBlock - 1) / kQBlock * kQ8xBytes; }

// sum_i a[i] * b[i] for the fp32 matrices of an expert that also has raw ones (moe_layer).
float dot_f32(const float* a, const float* b, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) acc[i % 8] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Row r of a matrix that is fp32 (w, cols wide) or raw (q) dotted with one input row
// given as fp32 (x) and, for block types, as Q8X (xq; quant/quant.h).
inline float row_dot(const QKernels& k, const float* w, const QWeight& q, int64_t r,
                     const float* x, const uint8_t* xq, int cols) {
  if (w) return dot_f32(w + r * cols, x, cols);
  return qdot(k, q.type, q.data + r * q.stride, x, xq, cols);
}

// The decode way: dot kernels, blocks of kRows output rows per work item.
void raw_dot(float* y, const float* x, const QWeight& q, const float* b, int T, int N, int K,
             LinearScratch* s) {
  constexpr int kRows = 16;
  const QKernels& k = qkernels();
  const int64_t xrb = q8x_row_bytes(K);
  if (qtype_is_block(q.type)) {
    for (int t = 0; t < T; ++t)
      k.quantize_q8x(x + static_cast<int64_t>(t) * K, s->xq.data() + t * xrb, K);
  }
  const uint8_t* xq = s->xq.data();  // (T, xrb)
  const int64_t nb = (N + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (nb > 1 && !omp_in_parallel())
  for (int64_t i = 0; i < nb; ++i) {
    const int r0 = static_cast<int>(i) * kRows, r1 = std::min(N, r0 + kRows);
    for (int t0 = 0; t0 < T; t0 += 4)
      linear_rows_dot(k, nullptr, q, b, r0, r1, x + static_cast<int64_t>(t0) * K, xq + t0 * xrb,
                      xrb, std::min(4, T - t0), K, y + static_cast<int64_t>(t0) * N, N);
  }
}

}  // namespace

void linear_rows_dot(const QKernels& k, const float* w, const QWeight& q, const float* b, int r0,
                     int r1, const float* x, const uint8_t* xq, int64_t xq_stride, int na,
                     int cols, float* y, int64_t y_stride) {
  const bool multi = na > 1 && !w && qtype_is_block(q.type);
  float o[4];
  for (int r = r0; r < r1; ++r) {
    if (multi) {
      qdot4(k, q.type, q.data + r * q.stride, xq, xq_stride, na, o, cols);
    } else {
      for (int j = 0; j < na; ++j)
        o[j] = row_dot(k, w, q, r, x + static_cast<int64_t>(j) * cols, xq + j * xq_stride, cols);
    }
    const float br = b ? b[r] : 0.0f;
    for (int j = 0; j < na; ++j) y[j * y_stride + r] = o[j] + br;
  }
}

void linear_scratch_init(LinearScratch* s, int64_t K_max) {
  K_max = std::max<int64_t>(K_max, 1);
  s->deq_rows =
      static_cast<int>(std::min<int64_t>(4096, std::max<int64_t>(32, (1 << 20) / K_max)));
  s->xq.assign(s->dot_max_tokens * q8x_row_bytes(K_max), 0);
  s->wdeq.assign(s->deq_rows * K_max, 0.0f);
}

void raw_gemm(float* y, const float* x, const QWeight& q, const float* b, int T, int N, int K,
              float* wdeq, int deq_rows) {
  for (int r0 = 0; r0 < N; r0 += deq_rows) {
    const int nr = std::min(deq_rows, N - r0);
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int r = 0; r < nr; ++r)
      dequantize_row(q.type, q.data + static_cast<int64_t>(r0 + r) * q.stride,
                     wdeq + static_cast<int64_t>(r) * K, K);
    op_gemm(true, T, nr, K, x, K, wdeq, K, y + r0, N);
  }
  if (!b) return;
  for (int i = 0; i < T; ++i) {
    float* row = y + static_cast<int64_t>(i) * N;
    for (int r = 0; r < N; ++r) row[r] += b[r];
  }
}

void linear_forward(float* y, const float* x, const float* w, const QWeight& q, const float* b,
                    int T, int N, int K, LinearScratch* s) {
  if (T <= 0 || N <= 0) return;
  if (w) {
    op_linear(y, x, w, b, T, N, K);
    return;
  }
  MOE_CHECK(q.data && q.type != QT_F32);
  if (T <= s->dot_max_tokens) {
    MOE_CHECK(q8x_row_bytes(K) * T <= static_cast<int64_t>(s->xq.size()));
    raw_dot(y, x, q, b, T, N, K, s);
  } else {
    MOE_CHECK(static_cast<int64_t>(K) * s->deq_rows <= static_cast<int64_t>(s->wdeq.size()));
    raw_gemm(y, x, q, b, T, N, K, s->wdeq.data(), s->deq_rows);
  }
}

}  // namespace moe
