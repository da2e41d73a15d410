// x86 SIMD versions of the quant kernels (quant.h). Each function carries its own target
// attribute, so this file is compiled for baseline x86-64 and the caller picks a version only after
// __builtin_cpu_supports says the CPU (and OS) can run it. On other architectures the file
// contributes nothing and only the scalar kernels exist.
//
// Integer sums per 32-weight block are exact in every version: weights in [-128, 127] (Q8_0) or
// [-8, 7] (Q4_0) times activations in [-127, 127] (as quantize_row_q8_0 produces) fit the int16
// pair sums of maddubs without saturation (so do Q4_0 nibbles taken unsigned, 0..15, in the Q8X
// kernels). Only the fp32 accumulation order differs from the scalar reference. Dequantization
// computes float(q) * d exactly as the reference does.
#include "quant/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "quant/ggml_types.h"

#define MOE_T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOE_T_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define MOE_T_VNNI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace moe {

const float* quant_f16_table();  // quant.cpp

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

// --- Q8X activations (quant.h) ---
// Per block the scale product is d_w * d_a in fp32 and the 8 int32 lanes hold the exact sums of
// products over runs of four, as in the Q8_0 kernels above, accumulated in the same order, so the
// results are bit for bit theirs. The weight scale comes from a table (exact fp16 -> fp32) and
// the activation's is already fp32, which keeps the shuffle port free for the integer work.

constexpr int kX8 = 32, kX128 = 64, kXd = 96;  // Q8X field offsets

// Weight rows are streamed from memory (decode reads each weight once per token). A software
// prefetch this many bytes ahead of the weights being read, once per iteration, keeps more
// cache-line requests in flight than the hardware prefetchers do (they also stop at 4 KiB page
// boundaries): on the 2-vCPU Intel Xeon VM (CPU model 207) of bench/results, a Q4_0 dot streaming
// 1 GiB of rows went from 14 to 23 GB/s with 2 threads (7.5 to 12 with one); 2 KiB gave 21,
// 8 KiB 23, 16 KiB 21. Prefetches past the end of a row fetch the next row, which is the next
// one read; past the end of an allocation they are harmless (prefetch never faults).
constexpr int kPrefetch = 4096;

MOE_T_AVX2 inline void prefetch(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
}

MOE_T_AVX2 inline uint16_t load_u16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// Q4_0 nibbles of one block as unsigned bytes 0..15 in element order (low nibbles, then high).
MOE_T_AVX2 inline __m256i q4_nibbles(const uint8_t* qs) {
  const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  return _mm256_and_si256(_mm256_blend_epi32(raw, _mm256_srli_epi16(raw, 4), 0xf0),
                          _mm256_set1_epi8(0x0f));
}

// A weight block's quants as its lanes function takes them (loaded and unpacked once per block,
// however many activation rows use it): Q8_0 as int8, Q4_0 as unsigned nibbles.
MOE_T_AVX2 inline __m256i wq_q8(const uint8_t* pw) { return load256(pw + 2); }
MOE_T_AVX2 inline __m256i wq_q4(const uint8_t* pw) { return q4_nibbles(pw + 2); }

// Lane sums of one block: Q8_0 weights by the sign trick; Q4_0 nibbles (unsigned) by maddubs,
// plus -8 x the activation's run sums.
MOE_T_AVX2 inline __m256i lanes_q8_avx2(__m256i wq, const uint8_t* pa) {
  return dot32_avx2(wq, load256(pa));
}
MOE_T_AVX2 inline __m256i lanes_q4_avx2(__m256i wq, const uint8_t* pa) {
  const __m256i p16 = _mm256_maddubs_epi16(wq, load256(pa));
  return _mm256_add_epi32(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)), load256(pa + kX8));
}

// A float at any byte offset (a Q8X row's scale is not 4-byte aligned); compiles to one
// broadcast load.
inline float load_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// acc += (d_w * d_a) * lanes, with DW = d_w broadcast and WQ the block's unpacked weights.
#define MOE_Q8X_FMA(ACC, DW, WQ, PA, LANES)                                      \
  ACC = _mm256_fmadd_ps(_mm256_mul_ps(DW, _mm256_set1_ps(load_f32((PA) + kXd))), \
                        _mm256_cvtepi32_ps(LANES(WQ, PA)), ACC)

// One weight row against NA Q8X activation rows a_stride bytes apart: two blocks per iteration
// into two accumulators per activation row (so consecutive blocks overlap), then one hsum each.
// The weight scale and quants of a block are loaded once for all NA rows; per row the operations
// and their order are those of NA = 1, which is the single-row kernel NAME, so every out[j] is
// bit for bit NAME(w, row j, n). WB: bytes per weight block.
#define MOE_DOT_Q8X(NAME, NAME4, ATTR, WB, WQ, LANES)                                           \
  template <int NA>                                                                            \
  ATTR inline void NAME##_rows(const uint8_t* pw, const uint8_t* pa, int64_t as, float* out,   \
                               int64_t n) {                                                    \
    const float* f16 = quant_f16_table();                                                      \
    __m256 acc0[NA], acc1[NA];                                                                 \
    for (int j = 0; j < NA; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();                      \
    int64_t b = n / kQBlock;                                                                   \
    for (; b >= 2; b -= 2, pw += 2 * (WB), pa += 2 * kQ8xBytes) {                              \
      prefetch(pw);                                                                            \
      const __m256 d0 = _mm256_set1_ps(f16[load_u16(pw)]);                                     \
      const __m256 d1 = _mm256_set1_ps(f16[load_u16(pw + (WB))]);                              \
      const __m256i w0 = WQ(pw), w1 = WQ(pw + (WB));                                           \
      _Pragma("GCC unroll 4") for (int j = 0; j < NA; ++j) {                                   \
        MOE_Q8X_FMA(acc0[j], d0, w0, pa + j * as, LANES);                                      \
        MOE_Q8X_FMA(acc1[j], d1, w1, pa + j * as + kQ8xBytes, LANES);                          \
      }                                                                                        \
    }                                                                                          \
    if (b == 1) {                                                                              \
      const __m256 d0 = _mm256_set1_ps(f16[load_u16(pw)]);                                     \
      const __m256i w0 = WQ(pw);                                                               \
      _Pragma("GCC unroll 4") for (int j = 0; j < NA; ++j)                                     \
          MOE_Q8X_FMA(acc0[j], d0, w0, pa + j * as, LANES);                                    \
    }                                                                                          \
    _Pragma("GCC unroll 4") for (int j = 0; j < NA; ++j) out[j] =                              \
        hsum8(_mm256_add_ps(acc0[j], acc1[j]));                                                \
  }                                                                                            \
  ATTR float NAME(const void* w, const void* a, int64_t n) {                                   \
    float r;                                                                                   \
    NAME##_rows<1>(static_cast<const uint8_t*>(w), static_cast<const uint8_t*>(a), 0, &r, n);  \
    return r;                                                                                  \
  }                                                                                            \
  ATTR void NAME4(const void* w, const void* a, int64_t as, int na, float* out, int64_t n) {   \
    const uint8_t* pw = static_cast<const uint8_t*>(w);                                        \
    const uint8_t* pa = static_cast<const uint8_t*>(a);                                        \
    switch (na) {                                                                              \
      case 1: NAME##_rows<1>(pw, pa, as, out, n); break;                                       \
      case 2: NAME##_rows<2>(pw, pa, as, out, n); break;                                       \
      case 3: NAME##_rows<3>(pw, pa, as, out, n); break;                                       \
      default: NAME##_rows<4>(pw, pa, as, out, n); break;                                      \
    }                                                                                          \
  }

MOE_DOT_Q8X(dot_q8_0_q8x_avx2, dot4_q8_0_q8x_avx2, MOE_T_AVX2, kQ8Bytes, wq_q8, lanes_q8_avx2)
MOE_DOT_Q8X(dot_q4_0_q8x_avx2, dot4_q4_0_q8x_avx2, MOE_T_AVX2, kQ4Bytes, wq_q4, lanes_q4_avx2)

// fp32 weight row against NX fp32 activation rows: two accumulators per row, 16 floats per
// iteration, a scalar tail.
template <int NX>
MOE_T_AVX2 inline void dot4_f32_rows_avx2(const float* w, const float* x, int64_t xs, float* out,
                                          int64_t n) {
  __m256 acc0[NX], acc1[NX];
  for (int j = 0; j < NX; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
    for (int j = 0; j < NX; ++j) {
      acc0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + j * xs + i), acc0[j]);
      acc1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + j * xs + i + 8), acc1[j]);
    }
  }
  for (int j = 0; j < NX; ++j) {
    float r = hsum8(_mm256_add_ps(acc0[j], acc1[j]));
    for (int64_t k = i; k < n; ++k) r += w[k] * x[j * xs + k];
    out[j] = r;
  }
}

MOE_T_AVX2 void dot4_f32_avx2(const float* w, const float* x, int64_t xs, int nx, float* out,
                              int64_t n) {
  switch (nx) {
    case 1: dot4_f32_rows_avx2<1>(w, x, xs, out, n); break;
    case 2: dot4_f32_rows_avx2<2>(w, x, xs, out, n); break;
    case 3: dot4_f32_rows_avx2<3>(w, x, xs, out, n); break;
    default: dot4_f32_rows_avx2<4>(w, x, xs, out, n); break;
  }
}

// quantize_row_q8x. Per block: amax with NaN ignored (as fmax does: the running maximum is the
// second operand of vmaxps, which it returns when the first is NaN), d = amax / 127 and 1/d in
// scalar code as the reference, q = round half away from zero of x * id (trunc, then +-1 where
// the exact remainder is at least one half), clamped to [-127, 127] with NaN going to -127 as
// fmin(127, fmax(-127, NaN)) does.
MOE_T_AVX2 void quantize_q8x_avx2(const float* x, void* y, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(y);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = n / kQBlock; b > 0; --b, x += kQBlock, out += kQ8xBytes) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(x + 8 * j);
      m = _mm256_max_ps(_mm256_and_ps(v[j], abs_mask), m);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t d16 = f32_to_f16(d);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i qi[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 p = _mm256_mul_ps(v[j], vid);
      const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 frac = _mm256_and_ps(_mm256_sub_ps(p, t), abs_mask);
      const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                        _mm256_or_ps(_mm256_and_ps(p, sign), one));
      __m256 r = _mm256_add_ps(t, step);
      r = _mm256_max_ps(r, _mm256_set1_ps(-127.0f));  // NaN -> -127
      r = _mm256_min_ps(r, _mm256_set1_ps(127.0f));
      qi[j] = _mm256_cvttps_epi32(r);
    }
    const __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]), p23 = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23),
                                                  _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                                        _mm256_set1_epi16(1));  // run sums
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + kX8),
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s, 3)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + kX128),
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s, 7)));
    const float ds = _cvtsh_ss(d16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + kXd), _mm256_setzero_si256());
    std::memcpy(out + kXd, &ds, 4);
  }
}

MOE_T_AVX2 inline __m256 bf16x8(const uint8_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

MOE_T_AVX2 float dot_bf16_f32_avx2(const void* w, const float* x, int64_t n) {
  const uint8_t* pw = static_cast<const uint8_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    prefetch(pw + 2 * i);
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

// Q8X: vpdpbusd takes the weights as unsigned bytes (Q4_0 nibbles; Q8_0 quants + 128 by flipping
// the top bit) and starts from the activation's -8 / -128 run sums, so each lane is the exact
// signed sum without the sign trick.
MOE_T_VNNI inline __m256i wq_q8_vnni(const uint8_t* pw) {
  return _mm256_xor_si256(load256(pw + 2), _mm256_set1_epi8(static_cast<char>(0x80)));
}
MOE_T_VNNI inline __m256i lanes_q8_vnni(__m256i wq, const uint8_t* pa) {
  return _mm256_dpbusd_epi32(load256(pa + kX128), wq, load256(pa));
}
MOE_T_VNNI inline __m256i lanes_q4_vnni(__m256i wq, const uint8_t* pa) {
  return _mm256_dpbusd_epi32(load256(pa + kX8), wq, load256(pa));
}

MOE_DOT_Q8X(dot_q8_0_q8x_vnni, dot4_q8_0_q8x_vnni, MOE_T_VNNI, kQ8Bytes, wq_q8_vnni, lanes_q8_vnni)
MOE_DOT_Q8X(dot_q4_0_q8x_vnni, dot4_q4_0_q8x_vnni, MOE_T_VNNI, kQ4Bytes, wq_q4, lanes_q4_vnni)

#undef MOE_DOT_256
#undef MOE_BLOCK_FMA
#undef MOE_DOT_Q8X
#undef MOE_Q8X_FMA

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
    prefetch(pw + 2 * i);
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

// The same with 512-bit registers and a masked tail.
template <int NX>
MOE_T_AVX512 inline void dot4_f32_rows_avx512(const float* w, const float* x, int64_t xs,
                                              float* out, int64_t n) {
  __m512 acc0[NX], acc1[NX];
  for (int j = 0; j < NX; ++j) acc0[j] = acc1[j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 w0 = _mm512_loadu_ps(w + i), w1 = _mm512_loadu_ps(w + i + 16);
    for (int j = 0; j < NX; ++j) {
      acc0[j] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + j * xs + i), acc0[j]);
      acc1[j] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + j * xs + i + 16), acc1[j]);
    }
  }
  for (; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
    const __m512 w0 = _mm512_maskz_loadu_ps(m, w + i);
    for (int j = 0; j < NX; ++j)
      acc0[j] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + j * xs + i), acc0[j]);
  }
  for (int j = 0; j < NX; ++j) out[j] = hsum16(_mm512_add_ps(acc0[j], acc1[j]));
}

MOE_T_AVX512 void dot4_f32_avx512(const float* w, const float* x, int64_t xs, int nx, float* out,
                                  int64_t n) {
  switch (nx) {
    case 1: dot4_f32_rows_avx512<1>(w, x, xs, out, n); break;
    case 2: dot4_f32_rows_avx512<2>(w, x, xs, out, n); break;
    case 3: dot4_f32_rows_avx512<3>(w, x, xs, out, n); break;
    default: dot4_f32_rows_avx512<4>(w, x, xs, out, n); break;
  }
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

// GGUF types (quant/ggml_types.h): chunks of blocks dequantized by the reference code into a
// buffer on the stack, then an 8-wide FMA dot with two accumulators.
template <QType T>
MOE_T_AVX2 float dot_ggml_avx2(const void* w, const float* x, int64_t n) {
  constexpr int64_t kChunk = 1024;  // weights per chunk: whole blocks of every type
  alignas(32) float tmp[kChunk];    // (kChunk) dequantized weights
  const uint8_t* p = static_cast<const uint8_t*>(w);
  const int64_t bs = qtype_block_size(T), bb = qtype_block_bytes(T);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float tail = 0.0f;
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t m = std::min(kChunk, n - i);
    dequantize_row_ggml(T, p + i / bs * bb, tmp, m);
    const float* xi = x + i;
    int64_t j = 0;
    for (; j + 16 <= m; j += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_load_ps(tmp + j), _mm256_loadu_ps(xi + j), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_load_ps(tmp + j + 8), _mm256_loadu_ps(xi + j + 8), acc1);
    }
    for (; j < m; ++j) tail += tmp[j] * xi[j];
  }
  return hsum8(_mm256_add_ps(acc0, acc1)) + tail;
}

void fill_ggml_avx2(QKernels* k) {
  for_each_ggml_type([k]<QType T>() { k->dot_ggml_f32[T] = dot_ggml_avx2<T>; });
}

// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}

}  // namespace

bool quant_x86_kernels(QTarget t, QKernels* out) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    cpu_has_f16c();
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
              dot_q8_0_q8x_avx2,
              dot_q4_0_q8x_avx2,
              dot4_q8_0_q8x_avx2,
              dot4_q4_0_q8x_avx2,
              quantize_q8x_avx2,
              dequant_q8_0_avx2,
              dequant_q4_0_avx2,
              dequant_bf16_avx2,
              dot4_f32_avx2};
      fill_ggml_avx2(out);
      return true;
    case QTARGET_AVX512:
      if (!avx512) return false;
      *out = {"avx512",
              dot_q8_0_q8_0_avx2,
              dot_q4_0_q8_0_avx2,
              dot_bf16_f32_avx512,
              dot_q8_0_q8x_avx2,
              dot_q4_0_q8x_avx2,
              dot4_q8_0_q8x_avx2,
              dot4_q4_0_q8x_avx2,
              quantize_q8x_avx2,
              dequant_q8_0_avx512,
              dequant_q4_0_avx512,
              dequant_bf16_avx512,
              dot4_f32_avx512};
      fill_ggml_avx2(out);
      return true;
    case QTARGET_AVX512_VNNI:
      if (!vnni) return false;
      *out = {"avx512_vnni",
              dot_q8_0_q8_0_vnni,
              dot_q4_0_q8_0_vnni,
              dot_bf16_f32_avx512,
              dot_q8_0_q8x_vnni,
              dot_q4_0_q8x_vnni,
              dot4_q8_0_q8x_vnni,
              dot4_q4_0_q8x_vnni,
              quantize_q8x_avx2,
              dequant_q8_0_avx512,
              dequant_q4_0_avx512,
              dequant_bf16_avx512,
              dot4_f32_avx512};
      fill_ggml_avx2(out);
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
