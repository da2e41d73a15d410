// Quantizers for the K-quant super-block formats Q4_K, Q5_K and Q6_K (block layouts in
// quant/ggml_types.h), so that `moe quantize` can write them; ggml's dequantizer (and
// dequantize_row_ggml) reads the blocks. The search is moe.cpp's own, a plain least-squares one
// on the unweighted squared error:
//
// Q4_K / Q5_K (value = d*sc*q - dmin*m; q in 0..N, N = 15 / 31; sc, m in 0..63; 8 sub-blocks of
// 32 weights):
//   1. each sub-block gets an affine fit x ~ s*q - o (s > 0, o >= 0): for a grid of step counts
//      N + t (t = -1 .. 1 by 0.1) over [min(x, 0), max(x)] the weights are rounded and (s, o)
//      refit by least squares (o clamped to >= 0); the best fit is then improved by two rounds
//      of re-rounding and refitting;
//   2. d = max s / 63 and dmin = max o / 63 are rounded to fp16, and sc, m = round(s / d),
//      round(o / dmin) from the rounded values;
//   3. per sub-block, the 3 x 3 neighbours of (sc, m) are tried with their own rounded q, and
//      the pair of least squared error (computed with the dequantizer's float formula) is kept.
// Q6_K (value = d*sc*(q - 32); q in 0..63; sc int8; 16 sub-blocks of 16 weights):
//   1. each sub-block gets a scale s: the element of largest magnitude maps to -(32 + t),
//      t = -1 .. 2 by 0.1, the weights are rounded to -32..31 and s refit by least squares;
//      then two rounds of re-rounding and refitting;
//   2. d = (the s of largest magnitude) / -128, rounded to fp16, sc = round(s / d) in -128..127;
//   3. per sub-block sc - 1, sc, sc + 1 are tried as in Q4_K's step 3.
// An all-zero sub-block stores zeros (d = 0 for an all-zero super-block). Non-finite input gives
// unspecified but in-range quants (the callers reject it). Every function is deterministic (the
// file is compiled without floating-point contraction), so the same input gives the same bytes
// in every build.
//
// Legend: n elements in a row, a multiple of 256.
#pragma once

#include <cstdint>

namespace moe {

// y receives n / 256 blocks (144 / 176 / 210 bytes each); pointers may be unaligned.
void quantize_row_q4_k(const float* x, void* y, int64_t n);
void quantize_row_q5_k(const float* x, void* y, int64_t n);
void quantize_row_q6_k(const float* x, void* y, int64_t n);

}  // namespace moe
