// x86 SIMD versions of the quant kernels (quant.h). Each function carries its own target
// attribute, so this file is compiled for baseline x86-64 and the caller picks a version only after
// __builtin_cpu_supports says the CPU (and OS) can run it. On other architectures the file
// contributes nothing and only the scalar kernels exist.
//
// Integer sums per 32-weight block are exact in every version: weights in [-128, 127] (Q8_0) or
// [-8, 7] (Q4_0) times activations in [-127, 127] (as quantize_row_q8_0 produces) fit the int16
// pair sums of maddubs without saturation. Only the fp32 accumulation order differs from the
// scalar reference. Dequantization computes float(q) * d exactly as the reference does.
#include "quant/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <cstring>

#define MOE_T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOE_T_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define MOE_T_VNNI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace moe {

namespace {

// --- AVX2 ----------------------------------------------------------------------------------

MOE_T_AVX2 inline float f16_avx2(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

MOE_T_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 Q4_0 nibbles of one block as int8 in element order (low nibbles 0..15, high 16..31), minus 8.
MOE_T_AVX2 inline __m256i q4_bytes(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i nib =
      _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0f));
  return _mm256_sub_epi8(nib, _mm256_set1_epi8(8));
}

// 8 int32 partial sums of x . y for 32 int8 pairs.
MOE_T_AVX2 inline __m256i dot32_avx2(__m256i x, __m256i y) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

MOE_T_AVX2 inline __m256i load256(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// acc += d_w * d_a * (8 partial sums of one block), weight block bytes X.
#define MOE_BLOCK_FMA(ACC, X, PW, PA, DOT32)                         \
  ACC = _mm256_fmadd_ps(_mm256_set1_ps(f16_avx2(PW) * f16_avx2(PA)), \
                        _mm256_cvtepi32_ps(DOT32(X, load256((PA) + 2))), ACC)

// Two blocks per iteration into two accumulators, so consecutive blocks overlap. WB: bytes per
// weight block; LOADW: its 32 int8 weights; DOT32: 8 int32 partial sums of 32 int8 pairs.
#define MOE_DOT_256(NAME, ATTR, WB, LOADW, DOT32)                                 \
  ATTR float NAME(const void* w, const void* a, int64_t n) {                      \
    const uint8_t* pw = static_cast<const uint8_t*>(w);                           \
    const uint8_t* pa = static_cast<const uint8_t*>(a);                           \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                \
    int64_t b = n / kQBlock;                                                      \
    for (; b >= 2; b -= 2, pw += 2 * (WB), pa += 2 * kQ8Bytes) {                  \
      MOE_BLOCK_FMA(acc0, LOADW(pw + 2), pw, pa, DOT32);                          \
      MOE_BLOCK_FMA(acc1, LOADW(pw + (WB) + 2), pw + (WB), pa + kQ8Bytes, DOT32); \
    }                                                                             \
    if (b == 1) MOE_BLOCK_FMA(acc0, LOADW(pw + 2), pw, pa, DOT32);                \
    return hsum8(_mm256_add_ps(acc0, acc1));                                      \
  }

MOE_DOT_256(dot_q8_0_q8_0_avx2, MOE_T_AVX2, kQ8Bytes, load256, dot32_avx2)
MOE_DOT_256(dot_q4_0_q8_0_avx2, MOE_T_AVX2, kQ4Bytes, q4_bytes, dot32_avx2)

MOE_T_AVX2 inline __m256 bf16x8(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

MOE_T_AVX2 float dot_bf16_f32_avx2(const void* w, const float* x, int64_t n) {
  const uint8_t* pw = static_cast<const uint8_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(bf16x8(pw + 2 * i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(bf16x8(pw + 2 * i + 16), _mm256_loadu_ps(x + i + 8), acc1);
  }
  if (i + 8 <= n) {
    acc0 = _mm256_fmadd_ps(bf16x8(pw + 2 * i), _mm256_loadu_ps(x + i), acc0);
    i += 8;
  }
  float s = hsum8(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    uint32_t u = static_cast<uint32_t>(pw[2 * i] | (pw[2 * i + 1] << 8)) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    s += f * x[i];
  }
  return s;
}

MOE_T_AVX2 void dequant_q8_0_avx2(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t b = n / kQBlock; b > 0; --b, p += kQ8Bytes, y += kQBlock) {
    const __m256 d = _mm256_set1_ps(f16_avx2(p));
    for (int j = 0; j < 4; ++j) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + 8 * j));
      _mm256_storeu_ps(y + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
    }
  }
}

MOE_T_AVX2 void dequant_q4_0_avx2(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t b = n / kQBlock; b > 0; --b, p += kQ4Bytes, y += kQBlock) {
    const __m256 d = _mm256_set1_ps(f16_avx2(p));
    alignas(32) int8_t q[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(q), q4_bytes(p + 2));
    for (int j = 0; j < 4; ++j) {
      const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * j));
      _mm256_storeu_ps(y + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d));
    }
  }
}

MOE_T_AVX2 void dequant_bf16_avx2(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, bf16x8(p + 2 * i));
  for (; i < n; ++i) {
    uint32_t u = static_cast<uint32_t>(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
    std::memcpy(y + i, &u, 4);
  }
}

// --- AVX-512 (F, BW, VL, DQ) and AVX-512-VNNI ----------------------------------------------
// BF16 rows and dequantization use 512-bit registers. The block dot products stay 256-bit: one
// block is 32 bytes, and pairing blocks in 512-bit registers measured slower (on a Zen 4, which
// splits 512-bit operations) than two 256-bit accumulators. VNNI replaces maddubs + madd with
// one vpdpbusd.

MOE_T_VNNI inline __m256i dot32_vnni(__m256i x, __m256i y) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x),
                             _mm256_sign_epi8(y, x));
}

MOE_DOT_256(dot_q8_0_q8_0_vnni, MOE_T_VNNI, kQ8Bytes, load256, dot32_vnni)
MOE_DOT_256(dot_q4_0_q8_0_vnni, MOE_T_VNNI, kQ4Bytes, q4_bytes, dot32_vnni)

#undef MOE_DOT_256
#undef MOE_BLOCK_FMA

// The maskz forms of the conversions avoid GCC 12's false -Wmaybe-uninitialized on the plain
// forms' undefined pass-through operand.
MOE_T_AVX512 inline __m512 bf16x16(const uint8_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, h), 16));
}

MOE_T_AVX512 inline __m512 i8x16_to_ps(__m128i q) {
  return _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepi8_epi32(0xffff, q));
}

MOE_T_AVX512 inline float hsum16(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  return hsum8(_mm256_add_ps(_mm256_load_ps(t), _mm256_load_ps(t + 8)));
}

MOE_T_AVX512 float dot_bf16_f32_avx512(const void* w, const float* x, int64_t n) {
  const uint8_t* pw = static_cast<const uint8_t*>(w);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(bf16x16(pw + 2 * i, 0xffff), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(bf16x16(pw + 2 * i + 32, 0xffff), _mm512_loadu_ps(x + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
    acc0 = _mm512_fmadd_ps(bf16x16(pw + 2 * i, m), _mm512_maskz_loadu_ps(m, x + i), acc0);
  }
  return hsum16(_mm512_add_ps(acc0, acc1));
}

MOE_T_AVX512 void dequant_q8_0_avx512(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t b = n / kQBlock; b > 0; --b, p += kQ8Bytes, y += kQBlock) {
    const __m512 d = _mm512_set1_ps(f16_avx2(p));
    for (int j = 0; j < 2; ++j) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 + 16 * j));
      _mm512_storeu_ps(y + 16 * j, _mm512_mul_ps(i8x16_to_ps(q), d));
    }
  }
}

MOE_T_AVX512 void dequant_q4_0_avx512(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t b = n / kQBlock; b > 0; --b, p += kQ4Bytes, y += kQBlock) {
    const __m512 d = _mm512_set1_ps(f16_avx2(p));
    const __m256i q = q4_bytes(p + 2);
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm512_storeu_ps(y, _mm512_mul_ps(i8x16_to_ps(lo), d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(i8x16_to_ps(hi), d));
  }
}

MOE_T_AVX512 void dequant_bf16_avx512(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
    _mm512_mask_storeu_ps(y + i, m, bf16x16(p + 2 * i, m));
  }
}

}  // namespace

bool quant_x86_kernels(QTarget t, QKernels* out) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  const bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  switch (t) {
    case QTARGET_AVX2:
      if (!avx2) return false;
      *out = {"avx2",
              dot_q8_0_q8_0_avx2,
              dot_q4_0_q8_0_avx2,
              dot_bf16_f32_avx2,
              dequant_q8_0_avx2,
              dequant_q4_0_avx2,
              dequant_bf16_avx2};
      return true;
    case QTARGET_AVX512:
      if (!avx512) return false;
      *out = {"avx512",
              dot_q8_0_q8_0_avx2,
              dot_q4_0_q8_0_avx2,
              dot_bf16_f32_avx512,
              dequant_q8_0_avx512,
              dequant_q4_0_avx512,
              dequant_bf16_avx512};
      return true;
    case QTARGET_AVX512_VNNI:
      if (!vnni) return false;
      *out = {"avx512_vnni",       dot_q8_0_q8_0_vnni,  dot_q4_0_q8_0_vnni, dot_bf16_f32_avx512,
              dequant_q8_0_avx512, dequant_q4_0_avx512, dequant_bf16_avx512};
      return true;
    default:
      return false;
  }
}

}  // namespace moe

#else  // not x86

namespace moe {
bool quant_x86_kernels(QTarget, QKernels*) {
  return false;
}
}  // namespace moe

#endif
