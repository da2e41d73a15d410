#include "quant/ggml_types.h"

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace moe {

const float* quant_f16_table();  // quant.cpp

namespace {

constexpr int kQK = 256;  // weights per K-quant super-block

inline float f16_at(const uint8_t* p) {
  static const float* table = quant_f16_table();  // f16_to_f32 of every bit pattern
  return table[p[0] | (p[1] << 8)];
}

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One block of each type: b points at its bytes, y receives its weights.

void block_f16(const uint8_t* b, float* y) { y[0] = f16_at(b); }

void block_q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// The 5-bit quants of a Q5_0 / Q5_1 block (0..31).
inline void q5_quants(const uint8_t* qh_p, const uint8_t* qs, int* q) {
  const uint32_t qh = u32_at(qh_p);
  for (int j = 0; j < 16; ++j) {
    q[j] = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) << 4) & 0x10);
    q[j + 16] = (qs[j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10);
  }
}

void block_q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  int q[32];
  q5_quants(b + 2, b + 6, q);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(q[j] - 16) * d;
}

void block_q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  int q[32];
  q5_quants(b + 4, b + 8, q);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(q[j]) * d + m;
}

void block_mxfp4(const uint8_t* b, float* y) {
  static const int8_t kv[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  // 2^(e - 128): half the E8M0 scale, since kv holds twice the E2M1 values.
  const uint8_t e = b[0];
  const uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
  float d;
  std::memcpy(&d, &bits, 4);
  const uint8_t* qs = b + 1;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(kv[qs[j] & 0x0f]) * d;
    y[j + 16] = static_cast<float>(kv[qs[j] >> 4]) * d;
  }
}

void block_q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;       // (16)
  const uint8_t* q = b + 16;   // (64)
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  int is = 0;
  for (int n = 0; n < kQK; n += 128, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t s = sc[is++];
        const float dl = d * static_cast<float>(s & 0x0f), ml = dmin * static_cast<float>(s >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
    }
  }
}

// The 16 6-bit scales of a Q3_K block (still offset by 32).
void q3k_scales(const uint8_t* s12, int8_t* out) {
  uint32_t aux[4];
  std::memcpy(aux, s12, 12);
  const uint32_t kmask1 = 0x03030303u, kmask2 = 0x0f0f0f0fu, tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::memcpy(out, aux, 16);
}

void block_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;       // (32)
  const uint8_t* q = b + 32;   // (64)
  int8_t scales[16];
  q3k_scales(b + 96, scales);
  const float d = f16_at(b + 108);
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQK; n += 128, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * static_cast<float>(scales[is++] - 32);
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// Scale and min j (0..7) of a Q4_K / Q5_K block's 12 scale bytes.
inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K (qh == null) and Q5_K: groups of 64 weights, low nibbles then high nibbles.
void block_q45_k(const uint8_t* b, const uint8_t* qh, const uint8_t* ql, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  for (int g = 0; g < 4; ++g, ql += 32) {
    for (int half = 0; half < 2; ++half) {
      int sc, m;
      scale_min_k4(2 * g + half, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const int bit = 2 * g + half;
      for (int l = 0; l < 32; ++l) {
        int q = half ? ql[l] >> 4 : ql[l] & 0x0f;
        if (qh && (qh[l] >> bit) & 1) q += 16;
        *y++ = d1 * static_cast<float>(q) - m1;
      }
    }
  }
}

void block_q4_k(const uint8_t* b, float* y) { block_q45_k(b, nullptr, b + 16, y); }
void block_q5_k(const uint8_t* b, float* y) { block_q45_k(b, b + 16, b + 48, y); }

void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;                                   // (128)
  const uint8_t* qh = b + 128;                             // (64)
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);  // (16)
  const float d = f16_at(b + 208);
  for (int n = 0; n < kQK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

struct TypeInfo {
  int block, bytes;
  BlockFn fn;
};

TypeInfo info(QType t) {
  switch (t) {
    case QT_F32: return {1, 4, nullptr};
    case QT_BF16: return {1, 2, nullptr};
    case QT_Q8_0: return {32, kQ8Bytes, nullptr};
    case QT_Q4_0: return {32, kQ4Bytes, nullptr};
    case QT_F16: return {1, 2, block_f16};
    case QT_Q4_1: return {32, 20, block_q4_1};
    case QT_Q5_0: return {32, 22, block_q5_0};
    case QT_Q5_1: return {32, 24, block_q5_1};
    case QT_Q2_K: return {kQK, 84, block_q2_k};
    case QT_Q3_K: return {kQK, 110, block_q3_k};
    case QT_Q4_K: return {kQK, 144, block_q4_k};
    case QT_Q5_K: return {kQK, 176, block_q5_k};
    case QT_Q6_K: return {kQK, 210, block_q6_k};
    case QT_MXFP4: return {32, 17, block_mxfp4};
    default: MOE_CHECK(false);
  }
}

}  // namespace

int qtype_block_size(QType t) { return info(t).block; }
int qtype_block_bytes(QType t) { return info(t).bytes; }

void dequantize_row_ggml(QType t, const void* x, float* y, int64_t n) {
  const TypeInfo ti = info(t);
  MOE_CHECK(ti.fn && n % ti.block == 0);
  const uint8_t* p = static_cast<const uint8_t*>(x);
  if (t == QT_F16) {  // one weight per "block": no call per element
    for (int64_t i = 0; i < n; ++i) y[i] = f16_at(p + 2 * i);
    return;
  }
  for (int64_t i = 0; i < n; i += ti.block, p += ti.bytes) ti.fn(p, y + i);
}

float dot_ggml_f32_ref(QType t, const void* w, const float* x, int64_t n) {
  const TypeInfo ti = info(t);
  MOE_CHECK(ti.fn && n % ti.block == 0);
  const uint8_t* p = static_cast<const uint8_t*>(w);
  float tmp[kQK];  // one dequantized block (F16: one weight)
  float acc = 0.0f;
  for (int64_t i = 0; i < n; i += ti.block, p += ti.bytes) {
    ti.fn(p, tmp);
    for (int j = 0; j < ti.block; ++j) acc += tmp[j] * x[i + j];
  }
  return acc;
}

}  // namespace moe
