// Linear layers whose weight matrix is fp32 or raw: BF16, Q8_0 or Q4_0 rows used as the
// checkpoint stores them (QWeight, model/weights.h), so a quantized model reads its quantized
// bytes at every step instead of an fp32 copy made at load.
//
// A raw matrix runs one of two ways:
//  - up to LinearScratch::dot_max_tokens rows of x (decode): row by row through the dot kernels
//    of quant/quant.h, blocks of output rows split over the OpenMP threads. For Q8_0 / Q4_0 the
//    rows of x are first quantized to Q8_0 (Q8X layout), as llama.cpp does; that rounding is the
//    only numerical difference from the fp32 product of the dequantized weights. BF16 rows are
//    dotted with fp32 x.
//  - more rows (prefill): deq_rows weight rows at a time are dequantized into a buffer and
//    multiplied by sgemm; this equals the fp32 product of the dequantized weights up to sgemm's
//    summation order.
// On the dot path every output element is computed by one thread in a fixed order, so results
// do not depend on the thread count; the sgemm path's do (op_sgemm splits by thread count).
//
// Legend: T rows of x, N/K output/input width.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/weight_view.h"
#include "quant/quant.h"

namespace moe {

// Buffers for raw matrices of up to K_max inputs, allocated once.
struct LinearScratch {
  int dot_max_tokens = 16;
  int deq_rows = 0;
  std::vector<uint8_t> xq;  // (dot_max_tokens, Q8X bytes of K_max) quantized rows of x
  std::vector<float> wdeq;  // (deq_rows, K_max) dequantized weight rows
};

void linear_scratch_init(LinearScratch* s, int64_t K_max);

// y (T, N) = x (T, K) W^T + b for W (N, K) given as fp32 (w) or, when w is null, raw (q).
// b (N) may be null. y must not alias x.
void linear_forward(float* y, const float* x, const float* w, const QWeight& q, const float* b,
                    int T, int N, int K, LinearScratch* s);

inline void linear_forward(float* y, const float* x, const Linear& l, int T, LinearScratch* s) {
  linear_forward(y, x, l.w, l.q, l.b, T, l.out, l.in, s);
}

// Rows r0..r1 of W (N, cols), fp32 (w) or raw (q, when w is null), against na <= 4 rows of x
// that are cols floats (x) and, for block types, xq_stride Q8X bytes (xq) apart, plus b (may be
// null): y[j * y_stride + r]. Block-type rows go through the multi-activation kernels when na > 1
// (each weight block unpacked once for the na rows, bit for bit the single-row results), the
// others one row of x at a time. The dot path of linear_forward and of moe_forward's experts.
void linear_rows_dot(const QKernels& k, const float* w, const QWeight& q, const float* b, int r0,
                     int r1, const float* x, const uint8_t* xq, int64_t xq_stride, int na,
                     int cols, float* y, int64_t y_stride);

// The prefill way for a raw W whatever T is: wdeq (deq_rows, K) receives dequantized rows.
void raw_gemm(float* y, const float* x, const QWeight& q, const float* b, int T, int N, int K,
              float* wdeq, int deq_rows);

}  // namespace moe
