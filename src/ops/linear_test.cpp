// linear_forward on raw matrices against a double-precision reference of the dequantized
// weights: on the dot path with the Q8_0 rounding of the inputs emulated, on the dequantize +
// sgemm path without it; and independence from the thread count.
#include "ops/linear.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "ops/ops.h"
#include "quant/quant.h"
#include "test_util.h"

namespace moe {
namespace {

using moe_test::randn;

// y (T, N) in double: x (T, K) . W^T + b, W given as fp32 rows.
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w,
                              const float* b, int T, int N, int K) {
  std::vector<double> y(static_cast<size_t>(T) * N);
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) {
      double s = b ? b[n] : 0.0;
      const float* xr = x.data() + static_cast<size_t>(t) * K;
      const float* wr = w.data() + static_cast<size_t>(n) * K;
      for (int k = 0; k < K; ++k) s += static_cast<double>(xr[k]) * wr[k];
      y[static_cast<size_t>(t) * N + n] = s;
    }
  return y;
}

TEST(LinearForward, RawMatchesReferenceOnBothPaths) {
  const int N = 45;  // not a multiple of the 16-row work items
  for (const int K : {96, 2080})
    for (const QType type : {QT_BF16, QT_Q8_0, QT_Q4_0})
      for (const bool bias : {false, true}) {
        SCOPED_TRACE(std::string(qtype_name(type)) + " K=" + std::to_string(K) +
                     (bias ? " bias" : ""));
        const auto wf = randn(static_cast<size_t>(N) * K, 21, 0.05f);
        const auto bv = randn(N, 22);
        const int64_t rb = qtype_row_bytes(type, K);
        std::vector<uint8_t> raw(static_cast<size_t>(N * rb));
        std::vector<float> wd(wf.size());  // the weights as the kernels see them
        for (int n = 0; n < N; ++n) {
          quantize_row(type, wf.data() + static_cast<size_t>(n) * K, raw.data() + n * rb, K);
          dequantize_row(type, raw.data() + n * rb, wd.data() + static_cast<size_t>(n) * K, K);
        }
        const QWeight q{type, raw.data(), rb};
        LinearScratch s;
        linear_scratch_init(&s, K);
        for (const int T : {1, 3, 16, 17, 40}) {
          const auto x = randn(static_cast<size_t>(T) * K, 23 + T);
          const bool dot = T <= s.dot_max_tokens;
          // The dot path sees Q8_0-rounded inputs for the block types.
          std::vector<float> xr(x);
          if (dot && qtype_is_block(type)) {
            std::vector<uint8_t> q8(static_cast<size_t>(qtype_row_bytes(QT_Q8_0, K)));
            for (int t = 0; t < T; ++t) {
              quantize_row_q8_0(x.data() + static_cast<size_t>(t) * K, q8.data(), K);
              dequantize_row_q8_0(q8.data(), xr.data() + static_cast<size_t>(t) * K, K);
            }
          }
          const float* b = bias ? bv.data() : nullptr;
          const std::vector<double> want = reference(xr, wd, b, T, N, K);
          std::vector<float> y(static_cast<size_t>(T) * N, NAN);
          linear_forward(y.data(), x.data(), nullptr, q, b, T, N, K, &s);
          double worst = 0.0;
          for (size_t i = 0; i < y.size(); ++i)
            worst = std::max(worst, std::fabs(y[i] - want[i]) / (1.0 + std::fabs(want[i])));
          EXPECT_LE(worst, 2e-5) << "T=" << T << (dot ? " (dot path)" : " (sgemm path)");
          // The dot path with one and with three threads: bit for bit. (The sgemm path is not:
          // op_sgemm splits C by thread count and OpenBLAS's edge tiles may sum differently.)
          if (!dot) continue;
          const int threads = omp_get_max_threads();
          std::vector<float> y1(y.size()), y3(y.size());
          omp_set_num_threads(1);
          linear_forward(y1.data(), x.data(), nullptr, q, b, T, N, K, &s);
          omp_set_num_threads(3);
          linear_forward(y3.data(), x.data(), nullptr, q, b, T, N, K, &s);
          omp_set_num_threads(threads);
          EXPECT_EQ(y1, y3) << "T=" << T;
        }
      }
}

TEST(LinearForward, Fp32WeightsAreOpLinear) {
  const int T = 2, N = 33, K = 64;
  const auto x = randn(T * K, 31), w = randn(N * K, 32), b = randn(N, 33);
  LinearScratch s;
  linear_scratch_init(&s, K);
  std::vector<float> got(T * N), want(T * N);
  linear_forward(got.data(), x.data(), w.data(), QWeight{}, b.data(), T, N, K, &s);
  op_linear(want.data(), x.data(), w.data(), b.data(), T, N, K);
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace moe
