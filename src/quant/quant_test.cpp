// Block formats: exact byte layouts of hand-made blocks, fp16 scale round trips, quantization
// error bounds, and every compiled-and-supported SIMD kernel against the scalar reference.
#include "quant/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "test_util.h"

namespace moe {
namespace {

using moe_test::randn;

std::vector<uint8_t> quantize(QType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(qtype_row_bytes(t, static_cast<int64_t>(x.size())));
  quantize_row(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
  return out;
}

float scale_of(const uint8_t* block) {
  return f16_to_f32(static_cast<uint16_t>(block[0] | (block[1] << 8)));
}

std::vector<QTarget> supported_simd_targets() {
  std::vector<QTarget> out;
  for (int t = QTARGET_SCALAR + 1; t < QTARGET_COUNT; ++t)
    if (qkernels_for(static_cast<QTarget>(t))) out.push_back(static_cast<QTarget>(t));
  return out;
}

TEST(Quant, RowBytes) {
  EXPECT_EQ(qtype_row_bytes(QT_Q8_0, 64), 68);
  EXPECT_EQ(qtype_row_bytes(QT_Q4_0, 4096), 128 * 18);
  EXPECT_EQ(qtype_row_bytes(QT_BF16, 7), 14);
  EXPECT_EQ(qtype_row_bytes(QT_F32, 7), 28);
  QType t;
  EXPECT_TRUE(qtype_parse("q4_0", &t));
  EXPECT_EQ(t, QT_Q4_0);
  EXPECT_FALSE(qtype_parse("q4_1", &t));
}

// Every finite fp16 value survives fp16 -> fp32 -> fp16, and scales are stored little-endian.
TEST(Quant, Fp16ScaleRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf / NaN
    ASSERT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
  // A block whose scale is the smallest normal fp16 (6.1035e-5): amax = 127 * 2^-14.
  std::vector<float> x(32, 0.0f);
  x[3] = 127.0f * std::ldexp(1.0f, -14);
  std::vector<uint8_t> q = quantize(QT_Q8_0, x);
  EXPECT_EQ(q[0], 0x00);
  EXPECT_EQ(q[1], 0x04);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 3]), 127);
  // Scales round to nearest even in fp16: 1 + 2^-11 (a tie) goes to 1.0, 1 + 3 * 2^-11 to 1 + 2^-9.
  x.assign(32, 0.0f);
  x[0] = 127.0f * (1.0f + std::ldexp(1.0f, -11));
  EXPECT_EQ(scale_of(quantize(QT_Q8_0, x).data()), 1.0f);
  x[0] = 127.0f * (1.0f + 3 * std::ldexp(1.0f, -11));
  EXPECT_EQ(scale_of(quantize(QT_Q8_0, x).data()), 1.0f + std::ldexp(1.0f, -9));
}

// Hand-made Q8_0 block: amax 127 gives d = 1 (fp16 0x3c00), q = round half away from zero.
TEST(Quant, Q8_0KnownBytes) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  x[0] = 127.0f;
  x[1] = -127.0f;
  x[2] = 0.5f;    // -> 1
  x[3] = -0.5f;   // -> -1
  x[4] = 2.5f;    // -> 3
  x[5] = -1.49f;  // -> -1
  std::vector<uint8_t> q = quantize(QT_Q8_0, x);
  ASSERT_EQ(q.size(), 34u);
  std::vector<uint8_t> want = {0x00, 0x3c, 127, static_cast<uint8_t>(-127), 1, 0xff, 3, 0xff};
  for (int j = 6; j < 32; ++j) want.push_back(static_cast<uint8_t>(static_cast<int8_t>(j - 16)));
  EXPECT_EQ(q, want);
  std::vector<float> back(32);
  dequantize_row_q8_0(q.data(), back.data(), 32);
  EXPECT_EQ(back[0], 127.0f);
  EXPECT_EQ(back[4], 3.0f);
  EXPECT_EQ(back[31], 15.0f);
}

// Hand-made Q4_0 blocks: element j in the low nibble of byte j, element j+16 in the high nibble.
TEST(Quant, Q4_0KnownBytes) {
  // max = -8 (first of the two largest magnitudes) -> d = 1, q = trunc(x + 8.5) clipped to 15.
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;   // q 0
  x[1] = 7.0f;    // q 15
  x[2] = 0.5f;    // trunc(9.0) = 9
  x[3] = -0.5f;   // trunc(8.0) = 8
  x[4] = 1.49f;   // trunc(9.99) = 9
  x[16] = 8.0f;   // same magnitude as x[0] but later: clipped 16 -> 15
  x[17] = -3.0f;  // 5
  x[31] = 2.0f;   // 10
  std::vector<uint8_t> q = quantize(QT_Q4_0, x);
  ASSERT_EQ(q.size(), 18u);
  std::vector<uint8_t> want(18, 0x88);  // zeros map to q = 8 in both nibbles
  want[0] = 0x00;
  want[1] = 0x3c;      // d = -8 / -8 = 1
  want[2 + 0] = 0xf0;  // lo q(x0)=0, hi q(x16)=15
  want[2 + 1] = 0x5f;  // lo 15, hi q(x17)=5
  want[2 + 2] = 0x89;
  want[2 + 3] = 0x88;
  want[2 + 4] = 0x89;
  want[2 + 15] = 0xa8;  // hi q(x31)=10
  EXPECT_EQ(q, want);
  std::vector<float> back(32);
  dequantize_row_q4_0(q.data(), back.data(), 32);
  EXPECT_EQ(back[0], -8.0f);
  EXPECT_EQ(back[16], 7.0f);  // the clipped extreme
  EXPECT_EQ(back[17], -3.0f);

  // A positive max gives a negative scale: max 4 -> d = -0.5 (fp16 0xb800).
  x.assign(32, 0.0f);
  x[5] = 4.0f;   // x*id = -8 -> q 0
  x[6] = -4.0f;  // +8 -> 16.5 -> clipped 15
  x[7] = 1.0f;   // -2 -> 6
  q = quantize(QT_Q4_0, x);
  EXPECT_EQ(q[0], 0x00);
  EXPECT_EQ(q[1], 0xb8);
  EXPECT_EQ(q[2 + 5], 0x80);
  EXPECT_EQ(q[2 + 6], 0x8f);
  EXPECT_EQ(q[2 + 7], 0x86);
}

TEST(Quant, ZeroBlocks) {
  std::vector<float> x(64, 0.0f);
  std::vector<uint8_t> q8 = quantize(QT_Q8_0, x), q4 = quantize(QT_Q4_0, x);
  for (uint8_t b : q8) EXPECT_EQ(b, 0);
  for (int b = 0; b < 2; ++b) {
    EXPECT_EQ(q4[18 * b], 0x00);  // d = 0 / -8 = -0.0, fp16 0x8000, as ggml writes it
    EXPECT_EQ(q4[18 * b + 1], 0x80);
    for (int j = 2; j < 18; ++j) EXPECT_EQ(q4[18 * b + j], 0x88);
  }
  std::vector<float> back(64, 1.0f);
  dequantize_row(QT_Q4_0, q4.data(), back.data(), 64);
  for (float v : back) EXPECT_EQ(v, 0.0f);
}

// |x - dequant(quant(x))| per block: Q8_0 <= d/2 + 127 d 2^-11 (rounding of q, then of d to fp16);
// Q4_0 <= |d| (the clipped extreme; others |d|/2) + 8 |d| 2^-11; BF16 relative 2^-8 (8 bits).
TEST(Quant, RoundTripErrorBounds) {
  const int64_t n = 32 * 64;
  std::vector<float> x = randn(n, 7, 0.05f);
  x[100] = 3.0f;  // an outlier in one block
  std::vector<float> back(n);
  std::vector<uint8_t> q8 = quantize(QT_Q8_0, x);
  dequantize_row(QT_Q8_0, q8.data(), back.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    EXPECT_NEAR(scale_of(&q8[b * 34]), d, d * std::ldexp(1.0f, -11));
    for (int j = 0; j < 32; ++j)
      ASSERT_LE(std::fabs(x[b * 32 + j] - back[b * 32 + j]),
                d * (0.5f + 127.0f * std::ldexp(1.0f, -11)) * 1.0001f);
  }
  std::vector<uint8_t> q4 = quantize(QT_Q4_0, x);
  dequantize_row(QT_Q4_0, q4.data(), back.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float d = std::fabs(scale_of(&q4[b * 18]));
    for (int j = 0; j < 32; ++j)
      ASSERT_LE(std::fabs(x[b * 32 + j] - back[b * 32 + j]),
                d * (1.0f + 8.0f * std::ldexp(1.0f, -11)) * 1.0001f);
  }
  std::vector<uint8_t> bf = quantize(QT_BF16, x);
  dequantize_row(QT_BF16, bf.data(), back.data(), n);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_LE(std::fabs(x[i] - back[i]), std::fabs(x[i]) * std::ldexp(1.0f, -8));
  // Activations never use -128, which keeps the SIMD int16 pair sums exact.
  for (int64_t b = 0; b < n / 32; ++b)
    for (int j = 0; j < 32; ++j) ASSERT_NE(q8[b * 34 + 2 + j], 0x80);
}

// Sum over blocks of |d_w d_a| * sum |q_w q_a|: the scale of the fp32 rounding in a dot product.
double q_abs_sum(QType wt, const uint8_t* w, const uint8_t* a, int64_t n) {
  std::vector<float> wf(n), af(n);
  dequantize_row(wt, w, wf.data(), n);
  dequantize_row(QT_Q8_0, a, af.data(), n);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(wf[i]) * af[i]);
  return s;
}

TEST(Quant, SimdKernelsMatchScalar) {
  const QKernels* ref = qkernels_for(QTARGET_SCALAR);
  ASSERT_NE(ref, nullptr);
  std::vector<QTarget> targets = supported_simd_targets();
  for (QTarget t : targets) std::printf("[ quant    ] testing target %s\n", qtarget_name(t));
  // Every x86-64 machine the project builds and tests on gets at least the AVX2 kernels; a CPU
  // (or architecture) without any SIMD target cannot run this check, and that is a failure.
  if (targets.empty())
    FAIL() << "qkernels_for() offers no SIMD target on this machine: the SIMD kernels go untested";
  const int blocks[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 129};
  uint32_t seed = 1;
  for (int nb : blocks) {
    const int64_t n = 32 * nb;
    std::vector<float> w = randn(n, seed++, 0.02f), x = randn(n, seed++, 1.0f);
    w[0] = 0.3f;  // a block with an outlier
    std::vector<uint8_t> w8 = quantize(QT_Q8_0, w), w4 = quantize(QT_Q4_0, w);
    std::vector<uint8_t> wb = quantize(QT_BF16, w), xq = quantize(QT_Q8_0, x);
    const float r8 = ref->dot_q8_0_q8_0(w8.data(), xq.data(), n);
    const float r4 = ref->dot_q4_0_q8_0(w4.data(), xq.data(), n);
    const float rb = ref->dot_bf16_f32(wb.data(), x.data(), n);
    const double tol8 = 2.4e-7 * (nb + 2) * q_abs_sum(QT_Q8_0, w8.data(), xq.data(), n);
    const double tol4 = 2.4e-7 * (nb + 2) * q_abs_sum(QT_Q4_0, w4.data(), xq.data(), n);
    std::vector<float> wbf(n);
    dequantize_row_bf16(wb.data(), wbf.data(), n);
    double absb = 0.0;
    for (int64_t i = 0; i < n; ++i) absb += std::fabs(static_cast<double>(wbf[i]) * x[i]);
    const double tolb = 1.2e-7 * (n + 2) * absb;
    std::vector<float> d_ref(n), d_simd(n);
    for (QTarget t : targets) {
      const QKernels* k = qkernels_for(t);
      SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n));
      EXPECT_NEAR(k->dot_q8_0_q8_0(w8.data(), xq.data(), n), r8, tol8);
      EXPECT_NEAR(k->dot_q4_0_q8_0(w4.data(), xq.data(), n), r4, tol4);
      EXPECT_NEAR(k->dot_bf16_f32(wb.data(), x.data(), n), rb, tolb);
      // Dequantization is exact in every version.
      const std::pair<QType, const std::vector<uint8_t>*> rows[] = {
          {QT_Q8_0, &w8}, {QT_Q4_0, &w4}, {QT_BF16, &wb}};
      for (const auto& [qt, row] : rows) {
        std::fill(d_simd.begin(), d_simd.end(), -1.0f);
        if (qt == QT_Q8_0) {
          ref->dequant_q8_0(row->data(), d_ref.data(), n);
          k->dequant_q8_0(row->data(), d_simd.data(), n);
        } else if (qt == QT_Q4_0) {
          ref->dequant_q4_0(row->data(), d_ref.data(), n);
          k->dequant_q4_0(row->data(), d_simd.data(), n);
        } else {
          ref->dequant_bf16(row->data(), d_ref.data(), n);
          k->dequant_bf16(row->data(), d_simd.data(), n);
        }
        EXPECT_EQ(std::memcmp(d_ref.data(), d_simd.data(), sizeof(float) * n), 0) << qtype_name(qt);
      }
    }
  }
  // BF16 rows of any length, from unaligned addresses.
  for (int64_t n = 1; n <= 80; ++n) {
    std::vector<float> w = randn(n, seed++, 0.5f), x = randn(n + 1, seed++);
    std::vector<uint8_t> wb(2 * n + 1);
    quantize_row_bf16(w.data(), wb.data() + 1, n);
    const float r = ref->dot_bf16_f32(wb.data() + 1, x.data() + 1, n);
    std::vector<float> d_ref(n), d_simd(n);
    ref->dequant_bf16(wb.data() + 1, d_ref.data(), n);
    double absb = 0.0;
    for (int64_t i = 0; i < n; ++i) absb += std::fabs(static_cast<double>(d_ref[i]) * x[i + 1]);
    for (QTarget t : targets) {
      const QKernels* k = qkernels_for(t);
      EXPECT_NEAR(k->dot_bf16_f32(wb.data() + 1, x.data() + 1, n), r, 1.2e-7 * (n + 2) * absb)
          << k->name << " n=" << n;
      k->dequant_bf16(wb.data() + 1, d_simd.data(), n);
      EXPECT_EQ(d_ref, d_simd) << k->name << " n=" << n;
    }
  }
}

// Q8X rows: every target's quantize_q8x writes the reference bytes, whose quants and scale are
// quantize_row_q8_0's and whose run sums are exact; every target's Q8X dots return bit for bit
// its Q8_0 dots. Inputs include ties at half steps, values just below a half, zero blocks, huge
// values, infinities and NaN.
TEST(Quant, Q8xMatchesQ8_0) {
  std::vector<QTarget> targets = {QTARGET_SCALAR};
  for (QTarget t : supported_simd_targets()) targets.push_back(t);
  uint32_t seed = 100;
  for (int nb : {1, 2, 3, 7, 16, 33, 64}) {
    const int64_t n = 32 * nb;
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<float> x = randn(n, seed++, variant == 1 ? 1e-3f : 1.0f);
      if (variant == 2) {  // amax 127 (d = 1): exact ties and near-ties
        for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<int>(i % 61) - 30) * 0.5f;
        for (int64_t b = 0; b < nb; ++b) x[32 * b] = 127.0f;
        x[1] = 0.49999997f;
        x[2] = -0.49999997f;
        x[3] = 126.5f;
        x[4] = -126.5f;
      }
      if (variant == 3) {
        std::fill(x.begin(), x.begin() + 32, 0.0f);  // zero block
        if (nb > 1) x[33] = std::numeric_limits<float>::infinity();
        if (nb > 2) x[70] = std::numeric_limits<float>::quiet_NaN();
        if (nb > 3) x[100] = -3e38f;
      }
      std::vector<uint8_t> q8 = quantize(QT_Q8_0, x), ref(n / 32 * kQ8xBytes, 0xee);
      quantize_row_q8x(x.data(), ref.data(), n);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* r = ref.data() + b * kQ8xBytes;
        const uint8_t* q = q8.data() + b * kQ8Bytes;
        ASSERT_EQ(std::memcmp(r, q + 2, 32), 0) << "block " << b;
        float d;
        std::memcpy(&d, r + 96, 4);
        const float dq = scale_of(q);
        ASSERT_EQ(std::memcmp(&d, &dq, 4), 0) << "block " << b;
        for (int i = 0; i < 8; ++i) {
          int32_t sum = 0, n8, n128;
          for (int j = 4 * i; j < 4 * i + 4; ++j) sum += static_cast<int8_t>(q[2 + j]);
          std::memcpy(&n8, r + 32 + 4 * i, 4);
          std::memcpy(&n128, r + 64 + 4 * i, 4);
          ASSERT_EQ(n8, -8 * sum);
          ASSERT_EQ(n128, -128 * sum);
        }
        for (int i = 100; i < kQ8xBytes; ++i) ASSERT_EQ(r[i], 0) << "padding byte " << i;
      }
      std::vector<float> w = randn(n, seed++, 0.02f);
      std::vector<uint8_t> w8 = quantize(QT_Q8_0, w), w4 = quantize(QT_Q4_0, w);
      for (QTarget t : targets) {
        const QKernels* k = qkernels_for(t);
        SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n) + " variant " +
                     std::to_string(variant));
        std::vector<uint8_t> got(ref.size(), 0xee);
        k->quantize_q8x(x.data(), got.data(), n);
        EXPECT_EQ(got, ref);
        const float a8 = k->dot_q8_0_q8_0(w8.data(), q8.data(), n);
        const float b8 = k->dot_q8_0_q8x(w8.data(), ref.data(), n);
        const float a4 = k->dot_q4_0_q8_0(w4.data(), q8.data(), n);
        const float b4 = k->dot_q4_0_q8x(w4.data(), ref.data(), n);
        EXPECT_EQ(std::memcmp(&a8, &b8, 4), 0) << a8 << " vs " << b8;
        EXPECT_EQ(std::memcmp(&a4, &b4, 4), 0) << a4 << " vs " << b4;
        const float c4 = qdot(*k, QT_Q4_0, w4.data(), nullptr, ref.data(), n);
        EXPECT_EQ(std::memcmp(&a4, &c4, 4), 0) << a4 << " vs " << c4;
      }
    }
  }
}

// Multi-activation dots: for every target and na = 1..4 activation rows a_stride bytes apart,
// out[j] is bit for bit that target's single-row Q8X dot of row j (and near the scalar
// reference); out[na..] is left alone. Row lengths include odd block counts and 2048 + 32.
TEST(Quant, Dot4MatchesSingleRowDots) {
  const QKernels* ref = qkernels_for(QTARGET_SCALAR);
  std::vector<QTarget> targets = {QTARGET_SCALAR};
  for (QTarget t : supported_simd_targets()) targets.push_back(t);
  uint32_t seed = 500;
  for (int nb : {1, 2, 3, 5, 64, 65, 67}) {
    const int64_t n = 32 * nb, rb = nb * kQ8xBytes;
    std::vector<float> w = randn(n, seed++, 0.02f);
    w[0] = 0.3f;  // a block with an outlier
    const std::vector<uint8_t> w8 = quantize(QT_Q8_0, w), w4 = quantize(QT_Q4_0, w);
    for (int64_t stride : {rb, rb + 37, 3 * rb + 4}) {
      std::vector<uint8_t> act(4 * stride, 0xee);
      std::vector<std::vector<uint8_t>> a8(4);  // the same rows as Q8_0, for the tolerance
      for (int j = 0; j < 4; ++j) {
        std::vector<float> x = randn(n, seed++, j == 2 ? 1e-3f : 1.0f);
        if (j == 1) std::fill(x.begin(), x.begin() + 32, 0.0f);  // a zero block
        quantize_row_q8x(x.data(), act.data() + j * stride, n);
        a8[j] = quantize(QT_Q8_0, x);
      }
      for (QTarget t : targets) {
        const QKernels* k = qkernels_for(t);
        for (int na = 1; na <= 4; ++na) {
          SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n) + " stride=" +
                       std::to_string(stride) + " na=" + std::to_string(na));
          const std::pair<QType, const std::vector<uint8_t>*> rows[] = {{QT_Q8_0, &w8},
                                                                        {QT_Q4_0, &w4}};
          for (const auto& [qt, wr] : rows) {
            float out[5];
            std::fill(out, out + 5, -7.0f);
            const auto dot1 = qt == QT_Q8_0 ? k->dot_q8_0_q8x : k->dot_q4_0_q8x;
            const auto ref1 = qt == QT_Q8_0 ? ref->dot_q8_0_q8x : ref->dot_q4_0_q8x;
            qdot4(*k, qt, wr->data(), act.data(), stride, na, out, n);
            for (int j = 0; j < na; ++j) {
              const uint8_t* aj = act.data() + j * stride;
              const float one = dot1(wr->data(), aj, n);
              EXPECT_EQ(std::memcmp(&out[j], &one, 4), 0)
                  << qtype_name(qt) << " row " << j << ": " << out[j] << " vs " << one;
              const double tol = 2.4e-7 * (nb + 2) * q_abs_sum(qt, wr->data(), a8[j].data(), n);
              EXPECT_NEAR(out[j], ref1(wr->data(), aj, n), tol) << qtype_name(qt) << " row " << j;
            }
            for (int j = na; j < 5; ++j) EXPECT_EQ(out[j], -7.0f) << "out[" << j << "] written";
          }
        }
      }
    }
  }
}

// The scalar dot products equal the exact sums of the dequantized values up to fp32 rounding.
// fp32 multi-row dots on every target against a double-precision reference: lengths with and
// without a tail, 1-4 rows at several strides, outputs past nx untouched.
TEST(Quant, Dot4F32MatchesReference) {
  std::vector<QTarget> targets = {QTARGET_SCALAR};
  for (QTarget t : supported_simd_targets()) targets.push_back(t);
  uint32_t seed = 900;
  for (int64_t n : {1, 7, 16, 31, 32, 33, 100, 2048, 2085}) {
    const std::vector<float> w = randn(n, seed++);
    for (int64_t stride : {n, n + 3, 2 * n + 16}) {
      std::vector<float> x(4 * stride, NAN);  // gaps between rows hold NaN: never read
      for (int j = 0; j < 4; ++j) {
        const std::vector<float> r = randn(n, seed++);
        std::copy(r.begin(), r.end(), x.begin() + j * stride);
      }
      for (QTarget t : targets) {
        const QKernels* k = qkernels_for(t);
        for (int nx = 1; nx <= 4; ++nx) {
          SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n) + " stride=" +
                       std::to_string(stride) + " nx=" + std::to_string(nx));
          float out[5];
          std::fill(out, out + 5, -7.0f);
          k->dot4_f32(w.data(), x.data(), stride, nx, out, n);
          for (int j = 0; j < nx; ++j) {
            double want = 0.0, mag = 0.0;
            for (int64_t i = 0; i < n; ++i) {
              want += static_cast<double>(w[i]) * x[j * stride + i];
              mag += std::fabs(static_cast<double>(w[i]) * x[j * stride + i]);
            }
            EXPECT_NEAR(out[j], want, 1e-6 * mag + 1e-7) << "row " << j;
          }
          for (int j = nx; j < 5; ++j) EXPECT_EQ(out[j], -7.0f);
        }
      }
    }
  }
}

TEST(Quant, ScalarDotMatchesDequantizedDot) {
  const QKernels* ref = qkernels_for(QTARGET_SCALAR);
  const int64_t n = 32 * 40;
  std::vector<float> w = randn(n, 11, 0.02f), x = randn(n, 12);
  std::vector<uint8_t> xq = quantize(QT_Q8_0, x);
  for (QType t : {QT_Q8_0, QT_Q4_0}) {
    std::vector<uint8_t> wq = quantize(t, w);
    std::vector<float> wf(n), xf(n);
    dequantize_row(t, wq.data(), wf.data(), n);
    dequantize_row(QT_Q8_0, xq.data(), xf.data(), n);
    double exact = 0.0;
    for (int64_t i = 0; i < n; ++i) exact += static_cast<double>(wf[i]) * xf[i];
    const float got = t == QT_Q8_0 ? ref->dot_q8_0_q8_0(wq.data(), xq.data(), n)
                                   : ref->dot_q4_0_q8_0(wq.data(), xq.data(), n);
    EXPECT_NEAR(got, exact, 1e-5 * q_abs_sum(t, wq.data(), xq.data(), n)) << qtype_name(t);
  }
}

TEST(Quant, DispatchPicksASupportedTarget) {
  const QKernels& k = qkernels();
  bool found = false;
  for (int t = 0; t < QTARGET_COUNT; ++t) {
    const QKernels* p = qkernels_for(static_cast<QTarget>(t));
    found |= p && std::strcmp(p->name, k.name) == 0;
  }
  EXPECT_TRUE(found) << k.name;
  std::printf("[ quant    ] dispatching to %s\n", k.name);
}

}  // namespace
}  // namespace moe
