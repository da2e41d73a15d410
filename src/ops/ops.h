// CPU kernels of the forward pass. Plain loops and BLAS; every function takes raw pointers with the
// shapes in its comment, so a second backend can share the signatures.
//
// Legend: T tokens, D model width, N/K output/input width of a linear, H heads, KV kv heads,
// dq query/key head width, dv value head width, C cache positions, R rotary dims, V vocab.
//
// Backward passes sit beside their forward and mirror its signature. Gradient convention:
// parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include <cstdint>

#include "core/specs.h"

namespace moe {

// Threading of the GEMMs. OpenBLAS's own worker threads spin (sched_yield) between calls and then
// fight the OpenMP threads of every other op for the cores. So OpenBLAS runs single-threaded
// (ops_set_threads) and each GEMM below is split by blocks of rows (or columns, when it has fewer
// rows than columns) of C over the OpenMP threads, each block one single-threaded sgemm. Inside
// an OpenMP parallel region, or for small products, a GEMM is one call. A product with one row
// (M = 1, a decode step) is a matrix-vector product: sgemv over blocks of C's columns, which
// streams the matrix at memory speed where sgemm would pack it first. With B transposed (a linear
// layer) and 2-8 rows, each row of B is read once for up to 4 rows of A (quant.h's dot4_f32).
// Sets the OpenMP thread count (n > 0) and makes OpenBLAS single-threaded.
void ops_set_threads(int n);
// C (M, N) = alpha op(A) op(B) + beta C, row-major, split as described above.
void op_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
              int lda, const float* B, int ldb, float beta, float* C, int ldc);

// y (T, N) = x (T, K) . W (N, K)^T + b (N). b may be null. y must not alias x.
void op_linear(float* y, const float* x, const float* w, const float* b, int T, int N, int K);

// dx (T, K) = dy (T, N) . W;  dw (N, K) += dy^T . x;  db (N) += sum_t dy. dx and db may be null.
void op_linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                        const float* w, int T, int N, int K);

// C (M, N) = A (M, K) . B, where B is (K, N) or, if trans_b, (N, K). Leading dimensions are row
// strides, so column blocks of larger matrices can be addressed.
void op_gemm(bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
             float* C, int ldc);

// y (T, D) = x / sqrt(mean(x^2) + eps) * w. y may alias x.
void op_rmsnorm(float* y, const float* x, const float* w, int T, int D, float eps);

// dx (T, D) from dy (T, D); dw (D) += . x is the forward input.
void op_rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                         int T, int D, float eps);

// x[i] = clamp(x[i], -c, c) for n elements.
void op_clamp(float* x, int64_t n, float c);
// Backward of op_clamp given its output y (n): dx[i] = 0 where y was clamped (|y| >= c), else
// unchanged. In place.
void op_clamp_backward(float* dx, const float* y, int64_t n, float c);

// y[i] += x[i] for n elements.
void op_add(float* y, const float* x, int64_t n);

// One AdamW update of n parameters w with gradients g and moments m, v (updated in place):
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= decay w;
// w -= step_size m / (sqrt(v * inv_bc2) + eps). step_size = lr / (1 - b1^t),
// inv_bc2 = 1 / (1 - b2^t), decay = lr * weight_decay (0 for no decay).
void op_adamw(float* w, const float* g, float* m, float* v, int64_t n, float b1, float b2,
              float eps, float step_size, float inv_bc2, float decay);

// Floats of scratch op_attention / op_mla_attention need for a context of C positions.
int64_t op_attention_scratch(int C);

// cos/sin tables (T, R/2) for positions pos0 .. pos0+T-1, scaled by the rope attention factor.
void op_rope_table(float* cos_out, float* sin_out, const RopeSpec& rope, int pos0, int T);

// Rotates R dims of each head in place. x points at the first rotary element of head 0 of token 0;
// head h of token t starts at x + t*row_stride + h*head_stride. cos/sin: (T, R/2).
void op_rope(float* x, int T, int n_heads, int64_t row_stride, int head_stride, int R,
             const float* cos, const float* sin, RopeLayout layout);

// Backward of op_rope: rotates gradients in place by the opposite angle (same arguments).
void op_rope_backward(float* dx, int T, int n_heads, int64_t row_stride, int head_stride, int R,
                      const float* cos, const float* sin, RopeLayout layout);

// Causal GQA attention of T new queries at positions pos0.. against a cache of pos0+T positions.
// q (T, H, dq), kc (C, KV, dq), vc (C, KV, dv), out (T, H, dv). window > 0 keeps the last
// `window` keys (the query's own included). sinks (H) or null: an extra logit per head that takes
// probability mass but has no value. scratch: (n_threads, pos0+T) floats. probs: null, or
// (T, H, C) to receive the attention probabilities (zero for masked keys), for training.
void op_attention(float* out, const float* q, const float* kc, const float* vc, int T, int pos0,
                  int H, int KV, int dq, int dv, float scale, int window, const float* sinks,
                  float* scratch, float* probs = nullptr);

// Backward of op_attention for one sequence from position 0 (pos0 = 0, C = T), with the same
// window. probs (T, H, T) from the forward; dq (T, H, dq), dk (T, KV, dq), dv (T, KV, dv) are
// overwritten. dsinks (H) or null (no sinks): the sink logits' gradients accumulate (+=); the
// sink's probability is 1 - sum_j probs[t, h, j].
void op_attention_backward(float* dq, float* dk, float* dv, float* dsinks, const float* dout,
                           const float* probs, const float* q, const float* k, const float* v,
                           int T, int H, int KV, int dqk, int dvh, float scale, int window);

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

// h (n) = silu(g) * u.
void op_swiglu(float* h, const float* g, const float* u, int64_t n);
// dg, du (n) from dh (n) and the forward inputs g, u. dg/du may alias nothing else.
void op_swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u,
                        int64_t n);

// Mean cross-entropy of logits (T, V) against targets (T); targets < 0 are ignored. If dlogits is
// non-null it receives d(loss)/d(logits) (T, V) scaled by `scale` (e.g. 1 / accumulation steps).
// Returns the mean loss over counted targets (0 if none); *n_counted gets their number.
// row_loss: (T) scratch for the per-row losses, summed in row order so that the result does not
// depend on the thread count.
double op_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int T, int V,
                        float scale, int* n_counted, double* row_loss);

}  // namespace moe
