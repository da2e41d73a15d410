#include "quant/kquant_write.h"

#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace moe {

namespace {

constexpr int kQK = 256;  // weights per super-block

// round(v) clamped to [lo, hi]; NaN gives lo. The clamp comes first, so the conversion is defined.
inline int round_clamp(float v, int lo, int hi) {
  v = std::fmin(std::fmax(v, static_cast<float>(lo)), static_cast<float>(hi));
  return static_cast<int>(std::nearbyint(v));
}

inline void put_f16(uint8_t* p, uint16_t h) {
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

// --- Q4_K / Q5_K: affine sub-blocks x ~ s*q - o -------------------------------------------

struct Affine {
  float s = 0.0f, o = 0.0f;  // scale (>= 0) and offset (>= 0)
};

// Squared error of x ~ s*q - o with each q the nearest of 0..nmax; q (n) receives them. The
// product is formed as the dequantizer forms it (s*q, then - o).
float affine_error(const float* x, int n, int nmax, float s, float o, uint8_t* q) {
  const float is = s > 0.0f ? 1.0f / s : 0.0f;
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = s > 0.0f ? round_clamp((x[i] + o) * is, 0, nmax) : 0;
    q[i] = static_cast<uint8_t>(l);
    const float e = s * static_cast<float>(l) - o - x[i];
    err += e * e;
  }
  return err;
}

// Least-squares (s, o) for fixed q, with o >= 0 (the scale alone when q is constant); false when
// q is all zero or the slope is not positive.
bool affine_refit(const float* x, const uint8_t* q, int n, Affine* f) {
  double sq = 0, sq2 = 0, sx = 0, sxq = 0;
  for (int i = 0; i < n; ++i) {
    sq += q[i];
    sq2 += static_cast<double>(q[i]) * q[i];
    sx += x[i];
    sxq += static_cast<double>(x[i]) * q[i];
  }
  const double det = n * sq2 - sq * sq;
  if (!(sq2 > 0)) return false;
  double a = 0, b = 1;  // x ~ a*q + b
  if (det > 0) a = (n * sxq - sx * sq) / det, b = (sq2 * sx - sq * sxq) / det;
  if (b > 0) {  // a constant q, or a positive offset, which cannot be stored: the scale alone
    b = 0;
    a = sxq / sq2;
  }
  if (!(a > 0)) return false;
  f->s = static_cast<float>(a);
  f->o = static_cast<float>(-b);
  return true;
}

// The affine fit of one sub-block of n <= 32 weights (steps 1 of the header).
Affine fit_affine(const float* x, int n, int nmax) {
  float lo = 0.0f, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::fmin(lo, x[i]);
    hi = std::fmax(hi, x[i]);
  }
  uint8_t q[32];  // (n)
  Affine best;
  best.o = -lo;
  float best_err = affine_error(x, n, nmax, 0.0f, best.o, q);  // a constant: the fallback
  if (!(hi > lo)) return best;
  for (int i = 0; i <= 20; ++i) {  // t = 0 first: of equal fits, the plain min-max one
    const int k = i == 0 ? 0 : i <= 10 ? i - 11 : i - 10;  // then -10..-1, 1..10
    Affine f;
    f.s = (hi - lo) / (static_cast<float>(nmax) + 0.1f * static_cast<float>(k));
    f.o = -lo;
    affine_error(x, n, nmax, f.s, f.o, q);
    if (!affine_refit(x, q, n, &f)) continue;
    const float e = affine_error(x, n, nmax, f.s, f.o, q);
    if (e < best_err) best_err = e, best = f;
  }
  for (int round = 0; round < 2 && best.s > 0.0f; ++round) {
    Affine f = best;
    affine_error(x, n, nmax, f.s, f.o, q);
    if (!affine_refit(x, q, n, &f)) break;
    const float e = affine_error(x, n, nmax, f.s, f.o, q);
    if (!(e < best_err)) break;
    best_err = e, best = f;
  }
  return best;
}

// The 12 scale bytes of a Q4_K / Q5_K block from its 8 (scale, min) pairs (6 bits each): pairs
// 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 as nibbles in bytes
// 8-11 (scale low, min high), their top 2 bits in the top bits of bytes 0-3 (scales) and 4-7
// (mins).
void pack_scales_k4(const int* sc, const int* m, uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j]);
    s[j + 4] = static_cast<uint8_t>(m[j]);
  }
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = static_cast<uint8_t>((sc[j] & 15) | ((m[j] & 15) << 4));
    s[j - 4] = static_cast<uint8_t>(s[j - 4] | ((sc[j] >> 4) << 6));
    s[j] = static_cast<uint8_t>(s[j] | ((m[j] >> 4) << 6));
  }
}

// One Q4_K (nmax 15) or Q5_K (nmax 31) super-block of 256 weights x into b (144 / 176 bytes).
void quantize_block_q45k(const float* x, uint8_t* b, int nmax) {
  Affine f[8];
  float max_s = 0.0f, max_o = 0.0f;
  for (int j = 0; j < 8; ++j) {
    f[j] = fit_affine(x + 32 * j, 32, nmax);
    max_s = std::fmax(max_s, f[j].s);
    max_o = std::fmax(max_o, f[j].o);
  }
  // fmax(+0, -0) may return either zero (it differs between g++ and clang++), and an offset of
  // -lo with lo = 0 is -0: store +0, so every build writes the same bytes.
  if (max_s == 0.0f) max_s = 0.0f;
  if (max_o == 0.0f) max_o = 0.0f;
  const uint16_t hd = f32_to_f16(max_s / 63.0f), hm = f32_to_f16(max_o / 63.0f);
  const float d = f16_to_f32(hd), dmin = f16_to_f32(hm);
  int sc[8], m[8];
  uint8_t L[kQK], q[32];  // (256) final quants, (32) a candidate's
  for (int j = 0; j < 8; ++j) {
    const float* xj = x + 32 * j;
    const int sc0 = d > 0.0f ? round_clamp(f[j].s / d, 0, 63) : 0;
    const int m0 = dmin > 0.0f ? round_clamp(f[j].o / dmin, 0, 63) : 0;
    sc[j] = sc0, m[j] = m0;
    float best = affine_error(xj, 32, nmax, d * static_cast<float>(sc0),
                              dmin * static_cast<float>(m0), L + 32 * j);
    for (int ds = -1; ds <= 1; ++ds) {
      for (int dm = -1; dm <= 1; ++dm) {
        const int s2 = sc0 + ds, m2 = m0 + dm;
        if ((ds == 0 && dm == 0) || s2 < 0 || s2 > 63 || m2 < 0 || m2 > 63) continue;
        const float e = affine_error(xj, 32, nmax, d * static_cast<float>(s2),
                                     dmin * static_cast<float>(m2), q);
        if (!(e < best)) continue;
        best = e, sc[j] = s2, m[j] = m2;
        std::memcpy(L + 32 * j, q, 32);
      }
    }
  }
  put_f16(b, hd);
  put_f16(b + 2, hm);
  pack_scales_k4(sc, m, b + 4);
  uint8_t* qh = nmax == 31 ? b + 16 : nullptr;  // (32) Q5_K's fifth bits
  uint8_t* qs = b + (qh ? 48 : 16);             // (128) nibbles
  if (qh) std::memset(qh, 0, 32);
  for (int g = 0; g < 4; ++g) {  // 64-weight groups: low nibbles, then high nibbles
    for (int l = 0; l < 32; ++l) {
      const int lo = L[64 * g + l], hi = L[64 * g + 32 + l];
      qs[32 * g + l] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
      if (qh)
        qh[l] = static_cast<uint8_t>(qh[l] | ((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1)));
    }
  }
}

// --- Q6_K: symmetric sub-blocks x ~ s*l, l in -32..31 --------------------------------------

float sym_error(const float* x, int n, float s, int8_t* l) {
  const float is = s != 0.0f ? 1.0f / s : 0.0f;
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int v = s != 0.0f ? round_clamp(x[i] * is, -32, 31) : 0;
    l[i] = static_cast<int8_t>(v);
    const float e = s * static_cast<float>(v) - x[i];
    err += e * e;
  }
  return err;
}

bool sym_refit(const float* x, const int8_t* l, int n, float* s) {
  double sll = 0, sxl = 0;
  for (int i = 0; i < n; ++i) {
    sll += static_cast<double>(l[i]) * l[i];
    sxl += static_cast<double>(x[i]) * l[i];
  }
  if (!(sll > 0)) return false;
  *s = static_cast<float>(sxl / sll);
  return true;
}

// The scale of one sub-block of n <= 16 weights (step 1 of the header).
float fit_sym(const float* x, int n) {
  float xm = 0.0f;  // the element of largest magnitude (the first on ties)
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(xm)) xm = x[i];
  int8_t l[16];  // (n)
  float best = 0.0f, best_err = sym_error(x, n, 0.0f, l);
  if (xm == 0.0f) return 0.0f;
  for (int i = 0; i <= 30; ++i) {  // t = 0 first: of equal fits, x_max exactly at -32
    const int k = i == 0 ? 0 : i <= 10 ? i - 11 : i - 10;  // then -10..-1, 1..20
    float s = -xm / (32.0f + 0.1f * static_cast<float>(k));
    sym_error(x, n, s, l);
    if (!sym_refit(x, l, n, &s)) continue;
    const float e = sym_error(x, n, s, l);
    if (e < best_err) best_err = e, best = s;
  }
  for (int round = 0; round < 2 && best != 0.0f; ++round) {
    float s = best;
    sym_error(x, n, s, l);
    if (!sym_refit(x, l, n, &s)) break;
    const float e = sym_error(x, n, s, l);
    if (!(e < best_err)) break;
    best_err = e, best = s;
  }
  return best;
}

// One Q6_K super-block of 256 weights x into b (210 bytes: ql 128, qh 64, int8 scales 16, f16 d).
void quantize_block_q6k(const float* x, uint8_t* b) {
  float s[16], smax = 0.0f;  // sub-block scales; the one of largest magnitude
  for (int j = 0; j < 16; ++j) {
    s[j] = fit_sym(x + 16 * j, 16);
    if (std::fabs(s[j]) > std::fabs(smax)) smax = s[j];
  }
  const uint16_t hd = f32_to_f16(smax / -128.0f);
  const float d = f16_to_f32(hd);
  int8_t L[kQK], l[16];                             // (256) final quants - 32, (16) a candidate's
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);  // (16)
  for (int j = 0; j < 16; ++j) {
    const float* xj = x + 16 * j;
    const int sc0 = d != 0.0f ? round_clamp(s[j] / d, -128, 127) : 0;
    sc[j] = static_cast<int8_t>(sc0);
    float best = sym_error(xj, 16, d * static_cast<float>(sc0), L + 16 * j);
    for (int s2 = sc0 - 1; s2 <= sc0 + 1; s2 += 2) {
      if (s2 < -128 || s2 > 127) continue;
      const float e = sym_error(xj, 16, d * static_cast<float>(s2), l);
      if (!(e < best)) continue;
      best = e, sc[j] = static_cast<int8_t>(s2);
      std::memcpy(L + 16 * j, l, 16);
    }
  }
  uint8_t* ql = b;        // (128) low 4 bits
  uint8_t* qh = b + 128;  // (64) high 2 bits
  std::memset(b, 0, 192);
  for (int h = 0; h < 2; ++h) {  // halves of 128 weights: 64 ql bytes and 32 qh bytes each
    for (int i = 0; i < 128; ++i) {
      const int q = L[128 * h + i] + 32, r = i % 32, k = i / 32;  // q in 0..63
      uint8_t& lo = ql[64 * h + r + 32 * (k & 1)];
      lo = static_cast<uint8_t>(lo | ((q & 15) << (4 * (k >> 1))));
      qh[32 * h + r] = static_cast<uint8_t>(qh[32 * h + r] | ((q >> 4) << (2 * k)));
    }
  }
  put_f16(b + 208, hd);
}

}  // namespace

void quantize_row_q4_k(const float* x, void* y, int64_t n) {
  MOE_CHECK(n % kQK == 0);
  uint8_t* out = static_cast<uint8_t*>(y);
  for (int64_t i = 0; i < n; i += kQK, out += 144) quantize_block_q45k(x + i, out, 15);
}

void quantize_row_q5_k(const float* x, void* y, int64_t n) {
  MOE_CHECK(n % kQK == 0);
  uint8_t* out = static_cast<uint8_t*>(y);
  for (int64_t i = 0; i < n; i += kQK, out += 176) quantize_block_q45k(x + i, out, 31);
}

void quantize_row_q6_k(const float* x, void* y, int64_t n) {
  MOE_CHECK(n % kQK == 0);
  uint8_t* out = static_cast<uint8_t*>(y);
  for (int64_t i = 0; i < n; i += kQK, out += 210) quantize_block_q6k(x + i, out);
}

}  // namespace moe
