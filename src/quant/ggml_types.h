// The GGUF block formats beyond Q8_0 / Q4_0 (quant/quant.h): F16, Q4_1, Q5_0, Q5_1, the K-quants
// Q2_K..Q6_K and MXFP4, with exact dequantization (bit for bit ggml's dequantize_row_*) and
// reference dot kernels of a raw weight row against an fp32 activation row.
//
// Block layouts (little-endian; "f16" is an IEEE half):
//   F16    1 weight, 2 bytes.
//   Q4_1   32 weights, 20 bytes: f16 d, f16 m, 16 bytes of nibbles (element j low, j+16 high);
//          value = q * d + m.
//   Q5_0   32 weights, 22 bytes: f16 d, u32 qh (bit j = 5th bit of element j), 16 nibble bytes;
//          value = (q - 16) * d.
//   Q5_1   32 weights, 24 bytes: f16 d, f16 m, u32 qh, 16 nibble bytes; value = q * d + m.
//   MXFP4  32 weights, 17 bytes: u8 e (E8M0 exponent), 16 nibble bytes of E2M1 codes;
//          value = kv[code] * 2^(e - 128), kv = {0,1,2,3,4,6,8,12, 0,-1,-2,-3,-4,-6,-8,-12}.
//   K-quants: super-blocks of 256 weights.
//   Q2_K   84 bytes: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit q,
//          f16 d, f16 dmin; value = d * sc * q - dmin * m.
//   Q3_K   110 bytes: 32 bytes hmask, 64 bytes of 2-bit q, 12 bytes of 6-bit scales, f16 d;
//          value = d * (sc - 32) * (q - (hmask bit ? 0 : 4)).
//   Q4_K   144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins (8 each), 128 nibble bytes
//          (64-weight groups: low nibbles first, then high); value = d * sc * q - dmin * m.
//   Q5_K   176 bytes: f16 d, f16 dmin, 12 scale bytes, 32 bytes qh, 128 nibble bytes.
//   Q6_K   210 bytes: 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d;
//          value = d * sc * (q - 32).
// The float operations (and their order) are those of ggml's reference dequantization, so the
// results are identical.
#pragma once

#include <cstdint>

#include "quant/quant.h"

namespace moe {

// Weights per block (1 for F32/BF16/F16) and bytes per block.
int qtype_block_size(QType t);
int qtype_block_bytes(QType t);

// Reference dequantization of n elements (n a multiple of the block size) of an F16 or ggml
// block type (QT_F16 .. QT_MXFP4).
void dequantize_row_ggml(QType t, const void* x, float* y, int64_t n);

// Reference dot of a raw row of such a type with an fp32 row: each block is dequantized as
// above, and its products are added in element order to one fp32 accumulator. The AVX2 kernels
// (quant_x86.cpp) dequantize chunks of blocks the same way and dot them with FMA; they are
// correct but not yet tuned (about 0.3-2.2 GB/s of weights per core).
float dot_ggml_f32_ref(QType t, const void* w, const float* x, int64_t n);

// Calls f.template operator()<T>() for each GGUF type T (QT_F16 .. QT_MXFP4), e.g. to fill a
// kernel table with one template instance per type.
template <class F>
void for_each_ggml_type(F&& f) {
  f.template operator()<QT_F16>();
  f.template operator()<QT_Q4_1>();
  f.template operator()<QT_Q5_0>();
  f.template operator()<QT_Q5_1>();
  f.template operator()<QT_Q2_K>();
  f.template operator()<QT_Q3_K>();
  f.template operator()<QT_Q4_K>();
  f.template operator()<QT_Q5_K>();
  f.template operator()<QT_Q6_K>();
  f.template operator()<QT_MXFP4>();
}

}  // namespace moe
