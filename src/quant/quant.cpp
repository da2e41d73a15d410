#include "quant/quant.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/ggml_types.h"
#include "quant/kquant_write.h"

namespace moe {

// Defined in quant_x86.cpp: fills the kernels of a SIMD target; false if not compiled in or not
// supported by this CPU.
bool quant_x86_kernels(QTarget t, QKernels* out);

// fp16 -> fp32 for every bit pattern (f16_to_f32), for the kernels' per-block weight scales.
const float* quant_f16_table() {
  static const std::vector<float> t = [] {
    std::vector<float> v(65536);
    for (uint32_t h = 0; h < 65536; ++h) v[h] = f16_to_f32(static_cast<uint16_t>(h));
    return v;
  }();
  return t.data();
}

namespace {

inline float load_f16(const uint8_t* p) {
  return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

inline void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

inline int64_t n_blocks(int64_t n) {
  MOE_CHECK(n % kQBlock == 0);
  return n / kQBlock;
}

// Q8X block fields (quant.h).
constexpr int kQ8xNeg8 = 32, kQ8xNeg128 = 64, kQ8xScale = 96;

inline float q8x_scale(const uint8_t* block) {
  float d;
  std::memcpy(&d, block + kQ8xScale, 4);
  return d;
}

// --- scalar kernels -----------------------------------------------------------------------

// Activation rows: Q8_0 blocks (fp16 scale, then the quants) or Q8X blocks (quants first, fp32
// scale at byte 96). The kernels below read both with the same arithmetic.
struct ActQ8_0 {
  static constexpr int kBytes = kQ8Bytes;
  static const uint8_t* quants(const uint8_t* p) { return p + 2; }
  static float scale(const uint8_t* p) { return load_f16(p); }
};
struct ActQ8x {
  static constexpr int kBytes = kQ8xBytes;
  static const uint8_t* quants(const uint8_t* p) { return p; }
  static float scale(const uint8_t* p) { return q8x_scale(p); }
};

template <class Act>
float dot_q8_0_scalar(const void* w, const void* a, int64_t n) {
  const uint8_t* pw = static_cast<const uint8_t*>(w);
  const uint8_t* pa = static_cast<const uint8_t*>(a);
  float acc = 0.0f;
  for (int64_t b = n_blocks(n); b > 0; --b, pw += kQ8Bytes, pa += Act::kBytes) {
    const uint8_t* qa = Act::quants(pa);
    int32_t s = 0;
    for (int j = 0; j < kQBlock; ++j) s += static_cast<int8_t>(pw[2 + j]) * static_cast<int8_t>(qa[j]);
    acc += (load_f16(pw) * Act::scale(pa)) * static_cast<float>(s);
  }
  return acc;
}

template <class Act>
float dot_q4_0_scalar(const void* w, const void* a, int64_t n) {
  const uint8_t* pw = static_cast<const uint8_t*>(w);
  const uint8_t* pa = static_cast<const uint8_t*>(a);
  float acc = 0.0f;
  for (int64_t b = n_blocks(n); b > 0; --b, pw += kQ4Bytes, pa += Act::kBytes) {
    const uint8_t* qa = Act::quants(pa);
    int32_t s = 0;
    for (int j = 0; j < kQBlock / 2; ++j) {
      const int lo = (pw[2 + j] & 0x0f) - 8, hi = (pw[2 + j] >> 4) - 8;
      s += lo * static_cast<int8_t>(qa[j]) + hi * static_cast<int8_t>(qa[j + 16]);
    }
    acc += (load_f16(pw) * Act::scale(pa)) * static_cast<float>(s);
  }
  return acc;
}

float dot_bf16_f32_scalar(const void* w, const float* x, int64_t n) {
  const uint8_t* pw = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i)
    acc += bf16_to_f32(static_cast<uint16_t>(pw[2 * i] | (pw[2 * i + 1] << 8))) * x[i];
  return acc;
}

// Multi-activation dots: the single-row kernel per activation row.
template <float (*DOT)(const void*, const void*, int64_t)>
void dot4_scalar(const void* w, const void* a, int64_t a_stride, int na, float* out, int64_t n) {
  for (int j = 0; j < na; ++j) out[j] = DOT(w, static_cast<const uint8_t*>(a) + j * a_stride, n);
}

void dot4_f32_scalar(const float* w, const float* x, int64_t x_stride, int nx, float* out,
                     int64_t n) {
  for (int j = 0; j < nx; ++j) {
    const float* xr = x + j * x_stride;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += w[i] * xr[i];
    out[j] = acc;
  }
}

const QKernels kScalar = {"scalar",
                          dot_q8_0_scalar<ActQ8_0>,
                          dot_q4_0_scalar<ActQ8_0>,
                          dot_bf16_f32_scalar,
                          dot_q8_0_scalar<ActQ8x>,
                          dot_q4_0_scalar<ActQ8x>,
                          dot4_scalar<dot_q8_0_scalar<ActQ8x>>,
                          dot4_scalar<dot_q4_0_scalar<ActQ8x>>,
                          quantize_row_q8x,
                          dequantize_row_q8_0,
                          dequantize_row_q4_0,
                          dequantize_row_bf16,
                          dot4_f32_scalar};

template <QType T>
float dot_ggml_ref(const void* w, const float* x, int64_t n) {
  return dot_ggml_f32_ref(T, w, x, n);
}

// The reference GGUF-type dots, for the targets that have no faster ones.
void fill_ggml_ref(QKernels* k) {
  for_each_ggml_type([k]<QType T>() { k->dot_ggml_f32[T] = dot_ggml_ref<T>; });
}

struct KernelTable {
  QKernels k[QTARGET_COUNT];
  bool ok[QTARGET_COUNT] = {};
  int best = QTARGET_SCALAR;
};

KernelTable build_table() {
  KernelTable t;
  t.k[QTARGET_SCALAR] = kScalar;
  fill_ggml_ref(&t.k[QTARGET_SCALAR]);
  t.ok[QTARGET_SCALAR] = true;
  for (int i = QTARGET_SCALAR + 1; i < QTARGET_COUNT; ++i) {
    t.ok[i] = quant_x86_kernels(static_cast<QTarget>(i), &t.k[i]);
    for (int q = 0; q < QT_COUNT; ++q)
      if (!t.k[i].dot_ggml_f32[q]) t.k[i].dot_ggml_f32[q] = t.k[QTARGET_SCALAR].dot_ggml_f32[q];
    if (t.ok[i]) t.best = i;
  }
  if (const char* cap = std::getenv("MOE_QUANT_TARGET")) {
    for (int i = 0; i < QTARGET_COUNT; ++i) {
      if (std::strcmp(cap, qtarget_name(static_cast<QTarget>(i))) != 0) continue;
      while (t.best > i || !t.ok[t.best]) --t.best;
    }
  }
  return t;
}

const KernelTable& table() {
  static const KernelTable t = build_table();
  return t;
}

}  // namespace

const char* qtype_name(QType t) {
  switch (t) {
    case QT_F32:
      return "f32";
    case QT_BF16:
      return "bf16";
    case QT_Q8_0:
      return "q8_0";
    case QT_Q4_0:
      return "q4_0";
    case QT_F16:
      return "f16";
    case QT_Q4_1:
      return "q4_1";
    case QT_Q5_0:
      return "q5_0";
    case QT_Q5_1:
      return "q5_1";
    case QT_Q2_K:
      return "q2_k";
    case QT_Q3_K:
      return "q3_k";
    case QT_Q4_K:
      return "q4_k";
    case QT_Q5_K:
      return "q5_k";
    case QT_Q6_K:
      return "q6_k";
    case QT_MXFP4:
      return "mxfp4";
    default:
      return "?";
  }
}

bool qtype_parse(const std::string& s, QType* out) {
  QType t;
  if (!qtype_parse_any(s, &t) || qtype_is_ggml(t)) return false;
  *out = t;
  return true;
}

bool qtype_parse_any(const std::string& s, QType* out) {
  for (int i = 0; i < QT_COUNT; ++i) {
    if (s == qtype_name(static_cast<QType>(i))) {
      *out = static_cast<QType>(i);
      return true;
    }
  }
  return false;
}

bool qtype_is_block(QType t) {
  return t == QT_Q8_0 || t == QT_Q4_0;
}

bool qtype_is_written_block(QType t) {
  return qtype_is_block(t) || t == QT_Q4_K || t == QT_Q5_K || t == QT_Q6_K;
}

bool qtype_parse_written(const std::string& s, QType* out) {
  QType t;
  if (!qtype_parse_any(s, &t) || (qtype_is_ggml(t) && !qtype_is_written_block(t))) return false;
  *out = t;
  return true;
}

int64_t qtype_row_bytes(QType t, int64_t n) {
  switch (t) {
    case QT_F32:
      return 4 * n;
    case QT_BF16:
      return 2 * n;
    case QT_Q8_0:
      return n_blocks(n) * kQ8Bytes;
    case QT_Q4_0:
      return n_blocks(n) * kQ4Bytes;
    default: {
      const int bs = qtype_block_size(t);
      MOE_CHECK(n % bs == 0);
      return n / bs * qtype_block_bytes(t);
    }
  }
}

void quantize_row_q8_0(const float* x, void* y, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(y);
  for (int64_t b = n_blocks(n); b > 0; --b, x += kQBlock, out += kQ8Bytes) {
    float amax = 0.0f;
    for (int j = 0; j < kQBlock; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (int j = 0; j < kQBlock; ++j) {
      // fmin/fmax keep the cast defined for non-finite input; finite values are within range.
      const float q = std::fmin(127.0f, std::fmax(-127.0f, std::round(x[j] * id)));
      out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
}

void quantize_row_q8x(const float* x, void* y, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(y);
  uint8_t q8[kQ8Bytes];
  for (int64_t b = n_blocks(n); b > 0; --b, x += kQBlock, out += kQ8xBytes) {
    quantize_row_q8_0(x, q8, kQBlock);
    std::memset(out, 0, kQ8xBytes);
    std::memcpy(out, q8 + 2, kQBlock);
    for (int i = 0; i < kQBlock / 4; ++i) {
      int32_t s = 0;
      for (int j = 4 * i; j < 4 * i + 4; ++j) s += static_cast<int8_t>(q8[2 + j]);
      const int32_t n8 = -8 * s, n128 = -128 * s;
      std::memcpy(out + kQ8xNeg8 + 4 * i, &n8, 4);
      std::memcpy(out + kQ8xNeg128 + 4 * i, &n128, 4);
    }
    const float d = load_f16(q8);
    std::memcpy(out + kQ8xScale, &d, 4);
  }
}

void quantize_row_q4_0(const float* x, void* y, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(y);
  for (int64_t b = n_blocks(n); b > 0; --b, x += kQBlock, out += kQ4Bytes) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQBlock; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (int j = 0; j < kQBlock / 2; ++j) {
      // trunc(v + 8.5) clipped to 15; v + 8.5 >= 0.5 for finite input, so clipping at 0 changes
      // nothing there and keeps the cast defined otherwise.
      const float lo = std::fmin(15.0f, std::fmax(0.0f, x[j] * id + 8.5f));
      const float hi = std::fmin(15.0f, std::fmax(0.0f, x[j + 16] * id + 8.5f));
      out[2 + j] = static_cast<uint8_t>(static_cast<int>(lo) | (static_cast<int>(hi) << 4));
    }
  }
}

void quantize_row_bf16(const float* x, void* y, int64_t n) {
  uint8_t* out = static_cast<uint8_t*>(y);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_bf16(x[i]);
    out[2 * i] = static_cast<uint8_t>(h & 0xff);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

void quantize_row(QType t, const float* x, void* y, int64_t n) {
  switch (t) {
    case QT_F32:
      std::memcpy(y, x, sizeof(float) * n);
      return;
    case QT_BF16:
      quantize_row_bf16(x, y, n);
      return;
    case QT_Q8_0:
      quantize_row_q8_0(x, y, n);
      return;
    case QT_Q4_0:
      quantize_row_q4_0(x, y, n);
      return;
    case QT_Q4_K:
      quantize_row_q4_k(x, y, n);
      return;
    case QT_Q5_K:
      quantize_row_q5_k(x, y, n);
      return;
    case QT_Q6_K:
      quantize_row_q6_k(x, y, n);
      return;
    default:
      MOE_CHECK(false);
  }
}

void dequantize_row_q8_0(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t b = n_blocks(n); b > 0; --b, p += kQ8Bytes, y += kQBlock) {
    const float d = load_f16(p);
    for (int j = 0; j < kQBlock; ++j) y[j] = static_cast<float>(static_cast<int8_t>(p[2 + j])) * d;
  }
}

void dequantize_row_q4_0(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t b = n_blocks(n); b > 0; --b, p += kQ4Bytes, y += kQBlock) {
    const float d = load_f16(p);
    for (int j = 0; j < kQBlock / 2; ++j) {
      y[j] = static_cast<float>((p[2 + j] & 0x0f) - 8) * d;
      y[j + 16] = static_cast<float>((p[2 + j] >> 4) - 8) * d;
    }
  }
}

void dequantize_row_bf16(const void* x, float* y, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(x);
  for (int64_t i = 0; i < n; ++i)
    y[i] = bf16_to_f32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
}

void dequantize_row(QType t, const void* x, float* y, int64_t n) {
  const QKernels& k = qkernels();
  switch (t) {
    case QT_F32:
      std::memcpy(y, x, sizeof(float) * n);
      return;
    case QT_BF16:
      k.dequant_bf16(x, y, n);
      return;
    case QT_Q8_0:
      k.dequant_q8_0(x, y, n);
      return;
    case QT_Q4_0:
      k.dequant_q4_0(x, y, n);
      return;
    default:
      dequantize_row_ggml(t, x, y, n);
  }
}

const char* qtarget_name(QTarget t) {
  switch (t) {
    case QTARGET_SCALAR:
      return "scalar";
    case QTARGET_AVX2:
      return "avx2";
    case QTARGET_AVX512:
      return "avx512";
    case QTARGET_AVX512_VNNI:
      return "avx512_vnni";
    default:
      return "?";
  }
}

const QKernels* qkernels_for(QTarget t) {
  if (t < 0 || t >= QTARGET_COUNT) return nullptr;
  const KernelTable& k = table();
  return k.ok[t] ? &k.k[t] : nullptr;
}

const QKernels& qkernels() {
  const KernelTable& k = table();
  return k.k[k.best];
}

}  // namespace moe
