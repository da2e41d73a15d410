// Every CPU kernel against a plain double-precision reference.
#include "ops/ops.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <vector>
#include "test_util.h"

namespace moe {
namespace {

using moe_test::randn;

TEST(Ops, LinearMatchesReference) {
  const int T = 5, N = 7, K = 13;
  auto x = randn(T * K, 1), w = randn(N * K, 2), b = randn(N, 3);
  std::vector<float> y(T * N);
  for (const float* bias : {static_cast<const float*>(nullptr), static_cast<const float*>(b.data())}) {
    op_linear(y.data(), x.data(), w.data(), bias, T, N, K);
    for (int t = 0; t < T; ++t)
      for (int n = 0; n < N; ++n) {
        double s = bias ? bias[n] : 0.0;
        for (int k = 0; k < K; ++k) s += static_cast<double>(x[t * K + k]) * w[n * K + k];
        EXPECT_NEAR(y[t * N + n], s, 1e-5);
      }
  }
}

TEST(Ops, GemmStridedBlocks) {
  // C (3x4 block inside a 3x6 matrix) = A (3x5 block of 3x8) . B^T (4x5 block of 4x9)
  auto A = randn(3 * 8, 4), B = randn(4 * 9, 5);
  std::vector<float> C(3 * 6, -7.0f);
  op_gemm(true, 3, 4, 5, A.data() + 1, 8, B.data() + 2, 9, C.data() + 1, 6);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(C[i * 6], -7.0f);  // untouched outside the block
    for (int j = 0; j < 4; ++j) {
      double s = 0;
      for (int k = 0; k < 5; ++k) s += static_cast<double>(A[i * 8 + 1 + k]) * B[j * 9 + 2 + k];
      EXPECT_NEAR(C[i * 6 + 1 + j], s, 1e-5);
    }
  }
}

// One row of C (M = 1) takes the sgemv path, split over threads when large enough: every
// transposition, alpha / beta, strided A and B, and C holding NaN where beta = 0.
TEST(Ops, SgemmOneRowMatchesReference) {
  for (const int N : {5, 40, 700}) {
    const int K = 300, lda = 3, ldb_t = K + 4, ldb_n = N + 6;
    auto a = randn(static_cast<size_t>(K) * lda, 7), bt = randn(static_cast<size_t>(N) * ldb_t, 8);
    auto bn = randn(static_cast<size_t>(K) * ldb_n, 9), c0 = randn(N, 10);
    for (const bool trans_a : {false, true})
      for (const bool trans_b : {false, true})
        for (const float beta : {0.0f, 0.5f}) {
          std::vector<float> c(c0);
          if (beta == 0.0f) std::fill(c.begin(), c.end(), NAN);
          const float* B = trans_b ? bt.data() : bn.data();
          const int ldb = trans_b ? ldb_t : ldb_n;
          op_sgemm(trans_a, trans_b, 1, N, K, 1.5f, a.data(), trans_a ? lda : K, B, ldb, beta,
                   c.data(), N);
          for (int j = 0; j < N; ++j) {
            double s = 0.0;
            for (int k = 0; k < K; ++k) {
              const double av = a[trans_a ? static_cast<size_t>(k) * lda : k];
              const double bv = trans_b ? bt[static_cast<size_t>(j) * ldb_t + k]
                                        : bn[static_cast<size_t>(k) * ldb_n + j];
              s += av * bv;
            }
            const double want = 1.5 * s + (beta == 0.0f ? 0.0 : beta * c0[j]);
            ASSERT_NEAR(c[j], want, 1e-4) << "N=" << N << " ta=" << trans_a << " tb=" << trans_b
                                          << " beta=" << beta << " j=" << j;
          }
        }
  }
}

// 2-8 rows of A against B^T take the multi-row dot path: strided A / B / C, alpha, beta, and C
// holding NaN where beta = 0; one thread and three give the same bits.
TEST(Ops, SgemmFewRowsMatchesReference) {
  const int K = 300, lda = K + 5, ldb = K + 2;
  for (const int N : {5, 40, 700})
    for (const int M : {2, 3, 5, 8}) {
      const int ldc = N + 3;
      auto a = randn(static_cast<size_t>(M) * lda, 11), b = randn(static_cast<size_t>(N) * ldb, 12);
      auto c0 = randn(static_cast<size_t>(M) * ldc, 13);
      for (const float beta : {0.0f, 0.5f}) {
        std::vector<float> c(c0);
        if (beta == 0.0f) std::fill(c.begin(), c.end(), NAN);
        op_sgemm(false, true, M, N, K, 1.5f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < N; ++j) {
            double s = 0.0;
            for (int k = 0; k < K; ++k)
              s += static_cast<double>(a[static_cast<size_t>(i) * lda + k]) *
                   b[static_cast<size_t>(j) * ldb + k];
            const double want = 1.5 * s + (beta == 0.0f ? 0.0 : beta * c0[i * ldc + j]);
            ASSERT_NEAR(c[i * ldc + j], want, 1e-4)
                << "M=" << M << " N=" << N << " beta=" << beta << " i=" << i << " j=" << j;
          }
        if (beta != 0.0f) continue;
        const int threads = omp_get_max_threads();
        std::vector<float> c1(c0.size(), 0.0f), c3(c0.size(), 0.0f);
        omp_set_num_threads(1);
        op_sgemm(false, true, M, N, K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c1.data(), ldc);
        omp_set_num_threads(3);
        op_sgemm(false, true, M, N, K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c3.data(), ldc);
        omp_set_num_threads(threads);
        EXPECT_EQ(c1, c3) << "M=" << M << " N=" << N;
      }
    }
}

TEST(Ops, RmsNormMatchesReference) {
  const int T = 3, D = 10;
  auto x = randn(T * D, 6), w = randn(D, 7);
  std::vector<float> y(T * D);
  op_rmsnorm(y.data(), x.data(), w.data(), T, D, 1e-5f);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < D; ++i) ss += static_cast<double>(x[t * D + i]) * x[t * D + i];
    double inv = 1.0 / std::sqrt(ss / D + 1e-5);
    for (int i = 0; i < D; ++i) EXPECT_NEAR(y[t * D + i], w[i] * x[t * D + i] * inv, 1e-6);
  }
  op_rmsnorm(x.data(), x.data(), w.data(), T, D, 1e-5f);  // in place
  for (int i = 0; i < T * D; ++i) EXPECT_EQ(x[i], y[i]);
}

// Rotation of pair (a, b) by angle th as a complex product (a + ib) e^{i th}, scaled by af.
TEST(Ops, RopeHalfAndInterleavedAreComplexRotations) {
  RopeSpec r;
  r.dim = 8;
  r.theta = 100.0;
  r.attention_factor = 1.25;
  for (int i = 0; i < 4; ++i) r.inv_freq.push_back(static_cast<float>(std::pow(100.0, -2.0 * i / 8)));
  const int T = 3, H = 2, pos0 = 5;
  std::vector<float> cs(T * 4), sn(T * 4);
  op_rope_table(cs.data(), sn.data(), r, pos0, T);
  for (RopeLayout layout : {ROPE_HALF, ROPE_INTERLEAVED}) {
    auto x = randn(T * H * 8, 8);
    auto y = x;
    op_rope(y.data(), T, H, H * 8, 8, 8, cs.data(), sn.data(), layout);
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < 4; ++i) {
          int ia = layout == ROPE_HALF ? i : 2 * i, ib = layout == ROPE_HALF ? i + 4 : 2 * i + 1;
          const float* xv = x.data() + (t * H + h) * 8;
          const float* yv = y.data() + (t * H + h) * 8;
          double th = (pos0 + t) * static_cast<double>(r.inv_freq[i]);
          double re = (xv[ia] * std::cos(th) - xv[ib] * std::sin(th)) * 1.25;
          double im = (xv[ib] * std::cos(th) + xv[ia] * std::sin(th)) * 1.25;
          EXPECT_NEAR(yv[ia], re, 1e-5);
          EXPECT_NEAR(yv[ib], im, 1e-5);
        }
  }
}

// Reference attention in double for one query position.
void ref_attention(std::vector<double>* out, const float* q, const float* kc, const float* vc, int pos,
                   int H, int KV, int dq, int dv, double scale, int window, const float* sinks) {
  out->assign(H * dv, 0.0);
  for (int h = 0; h < H; ++h) {
    int kvh = h / (H / KV);
    std::vector<double> s;
    int lo = window > 0 ? std::max(0, pos - window + 1) : 0;
    double mx = sinks ? sinks[h] : -1e300;
    for (int j = lo; j <= pos; ++j) {
      double d = 0;
      for (int i = 0; i < dq; ++i) d += static_cast<double>(q[h * dq + i]) * kc[(j * KV + kvh) * dq + i];
      s.push_back(d * scale);
      mx = std::max(mx, s.back());
    }
    double z = sinks ? std::exp(sinks[h] - mx) : 0.0;
    for (double& v : s) z += (v = std::exp(v - mx));
    for (int j = lo; j <= pos; ++j)
      for (int i = 0; i < dv; ++i) (*out)[h * dv + i] += s[j - lo] / z * vc[(j * KV + kvh) * dv + i];
  }
}

TEST(Ops, AttentionMatchesReferenceWithWindowAndSinks) {
  const int T = 4, pos0 = 3, C = pos0 + T, H = 4, KV = 2, dq = 6, dv = 5;
  auto q = randn(T * H * dq, 9), kc = randn(C * KV * dq, 10), vc = randn(C * KV * dv, 11);
  auto sinks = randn(H, 12);
  std::vector<float> out(T * H * dv), scratch(omp_get_max_threads() * C);
  for (int window : {0, 3}) {
    for (const float* sk : {static_cast<const float*>(nullptr), static_cast<const float*>(sinks.data())}) {
      op_attention(out.data(), q.data(), kc.data(), vc.data(), T, pos0, H, KV, dq, dv, 0.4f, window,
                   sk, scratch.data());
      std::vector<double> ref;
      for (int t = 0; t < T; ++t) {
        ref_attention(&ref, q.data() + t * H * dq, kc.data(), vc.data(), pos0 + t, H, KV, dq, dv, 0.4,
                      window, sk);
        for (int i = 0; i < H * dv; ++i) EXPECT_NEAR(out[t * H * dv + i], ref[i], 1e-5);
      }
    }
  }
}

// MLA in absorbed form equals plain attention over expanded keys and values.
TEST(Ops, MlaAbsorbedEqualsExpandedAttention) {
  const int T = 3, pos0 = 2, C = pos0 + T, H = 2, Lc = 7, R = 4, nope = 5, dv = 3;
  auto qn = randn(T * H * nope, 13), qpe = randn(T * H * R, 14), cc = randn(C * Lc, 15),
       kpe = randn(C * R, 16), wkv = randn(H * (nope + dv) * Lc, 17);
  // absorbed
  std::vector<float> qlat(T * H * Lc), olat(T * H * Lc), scratch(omp_get_max_threads() * C);
  for (int h = 0; h < H; ++h)
    op_gemm(false, T, Lc, nope, qn.data() + h * nope, H * nope, wkv.data() + h * (nope + dv) * Lc, Lc,
            qlat.data() + h * Lc, H * Lc);
  op_mla_attention(olat.data(), qlat.data(), qpe.data(), cc.data(), kpe.data(), T, pos0, H, Lc, R,
                   0.3f, scratch.data());
  // expanded: k[j,h] = [W_uk[h] c_j, kpe_j], v[j,h] = W_uv[h] c_j
  const int dq = nope + R;
  std::vector<float> k(C * H * dq), v(C * H * dv), q(T * H * dq);
  for (int j = 0; j < C; ++j)
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < nope + dv; ++i) {
        double s = 0;
        for (int c = 0; c < Lc; ++c) s += static_cast<double>(wkv[(h * (nope + dv) + i) * Lc + c]) * cc[j * Lc + c];
        if (i < nope) k[(j * H + h) * dq + i] = static_cast<float>(s);
        else v[(j * H + h) * dv + i - nope] = static_cast<float>(s);
      }
      for (int i = 0; i < R; ++i) k[(j * H + h) * dq + nope + i] = kpe[j * R + i];
    }
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < nope; ++i) q[(t * H + h) * dq + i] = qn[(t * H + h) * nope + i];
      for (int i = 0; i < R; ++i) q[(t * H + h) * dq + nope + i] = qpe[(t * H + h) * R + i];
    }
  for (int t = 0; t < T; ++t) {
    std::vector<double> ref;
    ref_attention(&ref, q.data() + t * H * dq, k.data(), v.data(), pos0 + t, H, H, dq, dv, 0.3, 0, nullptr);
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < dv; ++i) {
        double o = 0;
        for (int c = 0; c < Lc; ++c)
          o += static_cast<double>(olat[(t * H + h) * Lc + c]) * wkv[(h * (nope + dv) + nope + i) * Lc + c];
        EXPECT_NEAR(o, ref[h * dv + i], 2e-5);
      }
  }
}

TEST(Ops, SoftmaxAndClamp) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f, 1000.0f};
  op_softmax(x.data(), 3);
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(x[0], std::exp(1.0) / z, 1e-7);
  EXPECT_NEAR(x[2], std::exp(3.0) / z, 1e-7);
  op_clamp(x.data() + 3, 1, 2.5f);
  EXPECT_EQ(x[3], 2.5f);
}

}  // namespace
}  // namespace moe
