// Weight storage formats for experts: BF16 and the GGUF/ggml block formats Q8_0 and Q4_0
// (bit-compatible with ggml's block_q8_0 / block_q4_0), with reference row conversions and the
// dot-product kernels of the decode path.
//
// Q8_0: blocks of 32 weights, 34 bytes each: the fp16 scale d (little-endian), then 32 int8 q.
//   value = d * q. Quantization (as ggml's quantize_row_q8_0_ref): amax = max |x| over the block,
//   d = amax / 127, id = 1/d (0 when d == 0), q = roundf(x * id), i.e. round half away from zero.
//   id is taken from the fp32 d; the stored d is d rounded to fp16 (nearest even).
// Q4_0: blocks of 32 weights, 18 bytes each: fp16 d, then 16 bytes; byte j (0..15) holds element j
//   in its low nibble and element j + 16 in its high nibble. value = d * (q - 8).
//   Quantization (as ggml's quantize_row_q4_0_ref): max = the element of largest magnitude, the
//   first one on ties, with its sign; d = max / -8, id = 1/d (0 when d == 0),
//   q = min(15, trunc(x * id + 8.5)). x * id lies in [-8, 8], so this is round-half-up of
//   x * id + 8; the element `max` itself maps to q = 0 and only the opposite extreme is clipped
//   (8 -> 15). An all-zero block stores d = 0 / -8 = -0.0 (fp16 0x8000) and q = 8, as ggml does.
//   Non-finite inputs give unspecified (but in-range) q.
// BF16: 2 bytes per weight, the upper half of the fp32 bit pattern (round to nearest even).
//
// Dot kernels take weights in one of these formats and activations either as Q8_0 (for Q8_0 and
// Q4_0 weights; quantize the activation row once with quantize_row_q8_0), as Q8X (the same Q8_0
// values laid out for faster kernels, see below) or as fp32 (BF16).
// Per block they sum the 32 integer products exactly in int32 and add d_w * d_a * sum to an fp32
// accumulator; SIMD versions differ from the scalar reference only in the order of those fp32
// additions. Each kernel has a scalar reference and, on x86-64, AVX2+FMA+F16C, AVX-512 (F, BW, VL,
// DQ: 512-bit BF16 dots and dequantization) and AVX-512-VNNI (vpdpbusd block dots) versions,
// compiled with per-function target attributes and chosen at run time, so the library runs on any
// x86-64 (and builds elsewhere with the scalar kernels only).
// MOE_QUANT_TARGET=scalar|avx2|avx512|avx512_vnni caps the choice (for measurements).
//
// Q8X: an activation row quantized to Q8_0 once and used against many weight rows (the decode
// path), laid out so that the kernels need no per-block conversions of it. Per 32-value block,
// kQ8xBytes = 128 bytes: the 32 int8 quants (bytes 0-31); for each run of four quants (j = 4i ..
// 4i+3, i = 0..7) its sum times -8 (int32 x 8, bytes 32-63) and times -128 (bytes 64-95); the
// scale d as fp32 (bytes 96-99: the fp16 d of the Q8_0 block, widened); zero padding. The sums let
// a kernel take Q4_0 nibbles (0..15) or Q8_0 weights plus 128 as unsigned bytes and still get the
// exact integer sum of products per run of four, which is what the Q8_0 kernels add up. Quants and
// scale are exactly quantize_row_q8_0's, and each target's Q8X kernels return bit for bit what
// its Q8_0 kernels return for the Q8_0 row.
//
// Legend: n elements in a row (a multiple of 32 for the block formats).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe {

enum QType {
  QT_F32,  // plain fp32 (not a raw format: the engine holds fp32 views)
  QT_BF16,
  QT_Q8_0,
  QT_Q4_0,
  // GGUF block types (quant/ggml_types.h): run raw against fp32 activations, as BF16 is.
  QT_F16,
  QT_Q4_1,
  QT_Q5_0,
  QT_Q5_1,
  QT_Q2_K,
  QT_Q3_K,
  QT_Q4_K,
  QT_Q5_K,
  QT_Q6_K,
  QT_MXFP4,
  QT_COUNT
};

constexpr int kQBlock = 32;   // weights per Q8_0 / Q4_0 block
constexpr int kQ8Bytes = 34;  // bytes per Q8_0 block
constexpr int kQ4Bytes = 18;  // bytes per Q4_0 block
constexpr int kQ8xBytes = 128;  // bytes per Q8X block (activations only)

const char* qtype_name(QType t);  // "f32", "bf16", "q8_0", "q4_0", "f16", "q4_1", .., "mxfp4"
// Parses the types the writers produce: f32, bf16, q8_0, q4_0.
bool qtype_parse(const std::string& s, QType* out);
// Parses any type name qtype_name gives.
bool qtype_parse_any(const std::string& s, QType* out);
// F16 and the GGUF block types (QT_F16 .. QT_MXFP4).
inline bool qtype_is_ggml(QType t) { return t >= QT_F16 && t < QT_COUNT; }
bool qtype_is_block(QType t);  // Q8_0 or Q4_0
// The block types the checkpoint writers (`moe quantize`, `moe init`) store: Q8_0, Q4_0 and the
// K-quants Q4_K, Q5_K, Q6_K (quant/kquant_write.h).
bool qtype_is_written_block(QType t);
// Parses the types the checkpoint writers produce: f32, bf16, q8_0, q4_0, q4_k, q5_k, q6_k.
bool qtype_parse_written(const std::string& s, QType* out);
// Bytes of one row of n elements; for block types n must be a multiple of the block size
// (32, or 256 for the K-quants).
int64_t qtype_row_bytes(QType t, int64_t n);

// Reference row conversions. y receives qtype_row_bytes(t, n) bytes; pointers may be unaligned.
void quantize_row_q8_0(const float* x, void* y, int64_t n);
void quantize_row_q4_0(const float* x, void* y, int64_t n);
void quantize_row_bf16(const float* x, void* y, int64_t n);
// QT_F32 copies; also the K-quants of qtype_is_written_block.
void quantize_row(QType t, const float* x, void* y, int64_t n);
// Q8X row (n / 32 * kQ8xBytes bytes): quantize_row_q8_0, then the Q8X layout.
void quantize_row_q8x(const float* x, void* y, int64_t n);
void dequantize_row_q8_0(const void* x, float* y, int64_t n);
void dequantize_row_q4_0(const void* x, float* y, int64_t n);
void dequantize_row_bf16(const void* x, float* y, int64_t n);
// Dispatched (SIMD where available); bit-identical to the reference functions above.
void dequantize_row(QType t, const void* x, float* y, int64_t n);

// One set of kernels for one instruction-set target.
struct QKernels {
  const char* name;
  // sum_i w[i] * a[i] over n elements; w: Q8_0 / Q4_0 row, a: Q8_0 row.
  float (*dot_q8_0_q8_0)(const void* w, const void* a, int64_t n);
  float (*dot_q4_0_q8_0)(const void* w, const void* a, int64_t n);
  // sum_i w[i] * x[i]; w: BF16 row, x: fp32 row; any n.
  float (*dot_bf16_f32)(const void* w, const float* x, int64_t n);
  // The same dots with the activation as a Q8X row: bit for bit the results above.
  float (*dot_q8_0_q8x)(const void* w, const void* a, int64_t n);
  float (*dot_q4_0_q8x)(const void* w, const void* a, int64_t n);
  // One weight row against na (1..4) Q8X activation rows, the j-th at (const uint8_t*)a +
  // j * a_stride: out[j] is bit for bit dot_*_q8x(w, that row, n). Each weight block is read and
  // unpacked once for all of them (a few tokens per expert).
  void (*dot4_q8_0_q8x)(const void* w, const void* a, int64_t a_stride, int na, float* out,
                        int64_t n);
  void (*dot4_q4_0_q8x)(const void* w, const void* a, int64_t a_stride, int na, float* out,
                        int64_t n);
  // quantize_row_q8x (the same bytes).
  void (*quantize_q8x)(const float* x, void* y, int64_t n);
  // Exact dequantization of a row (same results as the reference functions).
  void (*dequant_q8_0)(const void* x, float* y, int64_t n);
  void (*dequant_q4_0)(const void* x, float* y, int64_t n);
  void (*dequant_bf16)(const void* x, float* y, int64_t n);
  // out[j] = sum_i w[i] * x[j * x_stride + i] for j < nx (1..4): an fp32 weight row read once
  // for up to 4 fp32 activation rows; any n. Targets differ only in the order of the additions.
  void (*dot4_f32)(const float* w, const float* x, int64_t x_stride, int nx, float* out,
                   int64_t n);
  // sum_i w[i] * x[i] for a raw row w of a GGUF type t (qtype_is_ggml(t)) and an fp32 row x;
  // n a multiple of the block size. Indexed by QType; filled for the ggml types only. Targets
  // differ from the reference (dot_ggml_f32_ref) only in the order of the fp32 additions.
  float (*dot_ggml_f32[QT_COUNT])(const void* w, const float* x, int64_t n);
};

enum QTarget { QTARGET_SCALAR, QTARGET_AVX2, QTARGET_AVX512, QTARGET_AVX512_VNNI, QTARGET_COUNT };

const char* qtarget_name(QTarget t);
// The kernels of a target, or null if they are not compiled in or this CPU lacks the features.
const QKernels* qkernels_for(QTarget t);
// The best supported target's kernels (capped by MOE_QUANT_TARGET), chosen once.
const QKernels& qkernels();

// Dot of a raw weight row (BF16, Q8_0, Q4_0 or a GGUF type) with an activation row given both as
// fp32 (used for BF16 and the GGUF types) and as Q8X (used for Q8_0 / Q4_0; may be null else).
inline float qdot(const QKernels& k, QType t, const void* w, const float* x, const void* xq,
                  int64_t n) {
  if (t == QT_Q4_0) return k.dot_q4_0_q8x(w, xq, n);
  if (t == QT_Q8_0) return k.dot_q8_0_q8x(w, xq, n);
  if (t == QT_BF16) return k.dot_bf16_f32(w, x, n);
  return k.dot_ggml_f32[t](w, x, n);
}

// The same for a block-type weight row (Q8_0 or Q4_0) against na <= 4 Q8X rows (see dot4_*).
inline void qdot4(const QKernels& k, QType t, const void* w, const void* xq, int64_t xq_stride,
                  int na, float* out, int64_t n) {
  if (t == QT_Q4_0) k.dot4_q4_0_q8x(w, xq, xq_stride, na, out, n);
  else k.dot4_q8_0_q8x(w, xq, xq_stride, na, out, n);
}

}  // namespace moe
