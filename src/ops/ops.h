// CPU kernels of the forward pass. Plain loops and BLAS; every function takes raw pointers with the
// shapes in its comment, so a second backend can share the signatures.
//
// Legend: T tokens, D model width, N/K output/input width of a linear, H heads, KV kv heads,
// dq query/key head width, dv value head width, C cache positions, R rotary dims.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace moe {

// y (T, N) = x (T, K) . W (N, K)^T + b (N). b may be null. y must not alias x.
void op_linear(float* y, const float* x, const float* w, const float* b, int T, int N, int K);

// C (M, N) = A (M, K) . B, where B is (K, N) or, if trans_b, (N, K). Leading dimensions are row
// strides, so column blocks of larger matrices can be addressed.
void op_gemm(bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
             float* C, int ldc);

// y (T, D) = x / sqrt(mean(x^2) + eps) * w. y may alias x.
void op_rmsnorm(float* y, const float* x, const float* w, int T, int D, float eps);

// x[i] = clamp(x[i], -c, c) for n elements.
void op_clamp(float* x, int64_t n, float c);

// cos/sin tables (T, R/2) for positions pos0 .. pos0+T-1, scaled by the rope attention factor.
void op_rope_table(float* cos_out, float* sin_out, const RopeSpec& rope, int pos0, int T);

// Rotates R dims of each head in place. x points at the first rotary element of head 0 of token 0;
// head h of token t starts at x + t*row_stride + h*head_stride. cos/sin: (T, R/2).
void op_rope(float* x, int T, int n_heads, int64_t row_stride, int head_stride, int R,
             const float* cos, const float* sin, RopeLayout layout);

// Causal GQA attention of T new queries at positions pos0.. against a cache of pos0+T positions.
// q (T, H, dq), kc (C, KV, dq), vc (C, KV, dv), out (T, H, dv). window > 0 keeps the last
// `window` keys (the query's own included). sinks (H) or null: an extra logit per head that takes
// probability mass but has no value. scratch: (n_threads, pos0+T) floats.
void op_attention(float* out, const float* q, const float* kc, const float* vc, int T, int pos0,
                  int H, int KV, int dq, int dv, float scale, int window, const float* sinks,
                  float* scratch);

// MLA attention in the weight-absorbed form, over the compressed cache.
// qlat (T, H, Lc) = q_nope absorbed into the latent space, qpe (T, H, R) rotated rope part,
// cc (C, Lc) normalised latent cache, kpe (C, R) rotated shared rope key, olat (T, H, Lc).
// scratch: (n_threads, pos0+T) floats.
void op_mla_attention(float* olat, const float* qlat, const float* qpe, const float* cc,
                      const float* kpe, int T, int pos0, int H, int Lc, int R, float scale,
                      float* scratch);

inline float op_silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
inline float op_sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

// In-place softmax over n values.
void op_softmax(float* x, int n);

}  // namespace moe
