#include "ops/ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "quant/quant.h"

namespace moe {

void ops_set_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

void op_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
              int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  constexpr int kAlign = 16;  // rows or columns per block, a multiple of the kernels' tiles
  constexpr int kFewRows = 8;  // up to this many rows of A (with B transposed): multi-row dots
  if (!trans_a && trans_b && M >= 2 && M <= kFewRows) {
    // A few rows of A against the rows of B (a linear layer on 2-8 tokens): each row of B is
    // read once for up to 4 rows of A by the fp32 multi-row dot kernel, where sgemm would pack
    // B for a product of a few rows. Blocks of B's rows (C's columns) go to the threads.
    const QKernels& q = qkernels();
    const bool small = nt <= 1 || 2.0 * M * N * K < 2e5;
    const int parts = small ? 1 : std::max(1, std::min(nt, N / kAlign));
    const int chunk = ((N + parts - 1) / parts + kAlign - 1) / kAlign * kAlign;
#pragma omp parallel for num_threads(parts) schedule(static, 1) if (parts > 1)
    for (int p = 0; p < parts; ++p) {
      const int j0 = std::min(N, p * chunk), j1 = std::min(N, j0 + chunk);
      float o[4];
      for (int j = j0; j < j1; ++j) {
        for (int m0 = 0; m0 < M; m0 += 4) {
          const int na = std::min(4, M - m0);
          q.dot4_f32(B + static_cast<int64_t>(j) * ldb, A + static_cast<int64_t>(m0) * lda, lda,
                     na, o, K);
          for (int t = 0; t < na; ++t) {
            float& c = C[static_cast<int64_t>(m0 + t) * ldc + j];
            c = beta == 0.0f ? alpha * o[t] : alpha * o[t] + beta * c;
          }
        }
      }
    }
    return;
  }
  if (M == 1) {
    // One row of C (a decode step): a matrix-vector product. sgemm would pack op(B) and reach
    // a third of the memory bandwidth that sgemv streams B at; split C's columns over threads.
    const int incx = trans_a ? lda : 1;
    const int parts = (nt <= 1 || 2.0 * N * K < 2e5) ? 1 : std::max(1, std::min(nt, N / kAlign));
    const int chunk = ((N + parts - 1) / parts + kAlign - 1) / kAlign * kAlign;
#pragma omp parallel for num_threads(parts) schedule(static, 1) if (parts > 1)
    for (int p = 0; p < parts; ++p) {
      const int j0 = std::min(N, p * chunk), j1 = std::min(N, j0 + chunk);
      if (j1 <= j0) continue;
      if (beta == 0.0f) std::fill(C + j0, C + j1, 0.0f);  // C may hold NaN garbage; 0 * NaN = NaN
      if (trans_b)  // B (N, K): C[j] = alpha B[j, :] . a + beta C[j]
        cblas_sgemv(CblasRowMajor, CblasNoTrans, j1 - j0, K, alpha,
                    B + static_cast<int64_t>(j0) * ldb, ldb, A, incx, beta, C + j0, 1);
      else  // B (K, N): C[j] = alpha B[:, j] . a + beta C[j]
        cblas_sgemv(CblasRowMajor, CblasTrans, K, j1 - j0, alpha, B + j0, ldb, A, incx, beta,
                    C + j0, 1);
    }
    return;
  }
  const bool by_rows = M >= N;
  const int extent = by_rows ? M : N;
  if (nt <= 1 || 2.0 * M * N * K < 2e6 || extent < 2 * kAlign) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const int parts = std::min(nt, extent / kAlign);
  const int chunk = ((extent + parts - 1) / parts + kAlign - 1) / kAlign * kAlign;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int p = 0; p < parts; ++p) {
    const int i0 = std::min(extent, p * chunk), i1 = std::min(extent, i0 + chunk);
    if (i1 <= i0) continue;
    if (by_rows) {  // rows i0..i1 of C and of op(A)
      const float* a = trans_a ? A + i0 : A + static_cast<int64_t>(i0) * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, i1 - i0, N, K, alpha, a, lda, B, ldb, beta,
                  C + static_cast<int64_t>(i0) * ldc, ldc);
    } else {  // columns i0..i1 of C and of op(B)
      const float* b = trans_b ? B + static_cast<int64_t>(i0) * ldb : B + i0;
      cblas_sgemm(CblasRowMajor, ta, tb, M, i1 - i0, K, alpha, A, lda, b, ldb, beta, C + i0, ldc);
    }
  }
}

void op_linear(float* y, const float* x, const float* w, const float* b, int T, int N, int K) {
  if (T <= 0 || N <= 0) return;
  if (b) {
    for (int t = 0; t < T; ++t) std::copy(b, b + N, y + static_cast<int64_t>(t) * N);
  }
  op_sgemm(false, true, T, N, K, 1.0f, x, K, w, K, b ? 1.0f : 0.0f, y, N);
}

void op_linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                        const float* w, int T, int N, int K) {
  if (T <= 0) return;
  if (dx) op_sgemm(false, false, T, K, N, 1.0f, dy, N, w, K, 0.0f, dx, K);
  op_sgemm(true, false, N, K, T, 1.0f, dy, N, x, K, 1.0f, dw, K);
  if (db) {
    for (int t = 0; t < T; ++t) {
      const float* r = dy + static_cast<int64_t>(t) * N;
      for (int n = 0; n < N; ++n) db[n] += r[n];
    }
  }
}

void op_gemm(bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
             float* C, int ldc) {
  op_sgemm(false, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}

void op_rmsnorm(float* y, const float* x, const float* w, int T, int D, float eps) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * D;
    float* yr = y + static_cast<int64_t>(t) * D;
    double ss = 0.0;
    for (int i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    float inv = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
    for (int i = 0; i < D; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void op_rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                         int T, int D, float eps) {
  // y = w * x * r, r = (mean(x^2) + eps)^-1/2; dx = r * (w*dy) - x * r^3 * mean(w*dy*x)
  for (int t = 0; t < T; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * D;
    const float* gr = dy + static_cast<int64_t>(t) * D;
    float* dr = dx + static_cast<int64_t>(t) * D;
    double ss = 0.0, dot = 0.0;
    for (int i = 0; i < D; ++i) {
      ss += static_cast<double>(xr[i]) * xr[i];
      dot += static_cast<double>(w[i]) * gr[i] * xr[i];
    }
    const double r = 1.0 / std::sqrt(ss / D + eps);
    const float c = static_cast<float>(r * r * r * dot / D);
    const float rf = static_cast<float>(r);
    for (int i = 0; i < D; ++i) {
      dw[i] += gr[i] * xr[i] * rf;
      dr[i] = rf * w[i] * gr[i] - xr[i] * c;
    }
  }
}

void op_clamp(float* x, int64_t n, float c) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::min(c, std::max(-c, x[i]));
}

void op_add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void op_adamw(float* w, const float* g, float* m, float* v, int64_t n, float b1, float b2,
              float eps, float step_size, float inv_bc2, float decay) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t j = 0; j < n; ++j) {
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
    w[j] -= decay * w[j];
    w[j] -= step_size * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
  }
}

int64_t op_attention_scratch(int C) {
  return static_cast<int64_t>(omp_get_max_threads()) * C;
}

void op_clamp_backward(float* dx, const float* y, int64_t n, float c) {
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(y[i]) >= c) dx[i] = 0.0f;
}

void op_rope_table(float* cos_out, float* sin_out, const RopeSpec& rope, int pos0, int T) {
  const int half = rope.dim / 2;
  const float af = static_cast<float>(rope.attention_factor);
  for (int t = 0; t < T; ++t) {
    const float pos = static_cast<float>(pos0 + t);
    for (int i = 0; i < half; ++i) {
      float ang = pos * rope.inv_freq[i];  // fp32 product, as transformers does
      cos_out[t * half + i] = static_cast<float>(std::cos(static_cast<double>(ang))) * af;
      sin_out[t * half + i] = static_cast<float>(std::sin(static_cast<double>(ang))) * af;
    }
  }
}

namespace {
// Rotates by +angle (sgn = 1) or -angle (sgn = -1).
void rope_rotate(float* x, int T, int n_heads, int64_t row_stride, int head_stride, int R,
                 const float* cos, const float* sin_in, RopeLayout layout, float sgn) {
  const int half = R / 2;
  for (int t = 0; t < T; ++t) {
    const float* c = cos + static_cast<int64_t>(t) * half;
    const float* s = sin_in + static_cast<int64_t>(t) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + t * row_stride + static_cast<int64_t>(h) * head_stride;
      if (layout == ROPE_HALF) {
        for (int i = 0; i < half; ++i) {
          float a = v[i], b = v[i + half], si = sgn * s[i];
          v[i] = a * c[i] - b * si;
          v[i + half] = b * c[i] + a * si;
        }
      } else {
        for (int i = 0; i < half; ++i) {
          float a = v[2 * i], b = v[2 * i + 1], si = sgn * s[i];
          v[2 * i] = a * c[i] - b * si;
          v[2 * i + 1] = b * c[i] + a * si;
        }
      }
    }
  }
}
}  // namespace

void op_rope(float* x, int T, int n_heads, int64_t row_stride, int head_stride, int R,
             const float* cos, const float* sin, RopeLayout layout) {
  rope_rotate(x, T, n_heads, row_stride, head_stride, R, cos, sin, layout, 1.0f);
}

void op_rope_backward(float* dx, int T, int n_heads, int64_t row_stride, int head_stride, int R,
                      const float* cos, const float* sin, RopeLayout layout) {
  // The transpose of a rotation is the rotation by the opposite angle.
  rope_rotate(dx, T, n_heads, row_stride, head_stride, R, cos, sin, layout, -1.0f);
}

void op_swiglu(float* h, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = op_silu(g[i]) * u[i];
}

void op_swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u,
                        int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = op_sigmoid(g[i]);
    const float silu = g[i] * s;
    du[i] = dh[i] * silu;
    dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

double op_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int T, int V,
                        float scale, int* n_counted, double* row_loss) {
  int n = 0;
  for (int t = 0; t < T; ++t) n += targets[t] >= 0 ? 1 : 0;
  if (n_counted) *n_counted = n;
  const float inv_n = n > 0 ? scale / static_cast<float>(n) : 0.0f;
  // Rows in parallel; each row's loss is summed afterwards in row order.
  std::fill(row_loss, row_loss + T, 0.0);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    const float* lg = logits + static_cast<int64_t>(t) * V;
    float* dl = dlogits ? dlogits + static_cast<int64_t>(t) * V : nullptr;
    if (targets[t] < 0) {
      if (dl) std::fill(dl, dl + V, 0.0f);
      continue;
    }
    float mx = lg[0];
    for (int i = 1; i < V; ++i) mx = std::max(mx, lg[i]);
    double z = 0.0;
    for (int i = 0; i < V; ++i) z += std::exp(lg[i] - mx);  // float exp, double sum
    const double lse = mx + std::log(z);
    row_loss[t] = lse - lg[targets[t]];
    if (dl) {
      const float lse_f = static_cast<float>(lse);
      for (int i = 0; i < V; ++i) dl[i] = std::exp(lg[i] - lse_f) * inv_n;
      dl[targets[t]] -= inv_n;
    }
  }
  double total = 0.0;
  for (int t = 0; t < T; ++t) total += row_loss[t];
  return n > 0 ? total / n : 0.0;
}

void op_softmax(float* x, int n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

namespace {
// Vectorised (the simd reduction lets the compiler reorder the sum into lanes).
inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

void op_attention(float* out, const float* q, const float* kc, const float* vc, int T, int pos0,
                  int H, int KV, int dq, int dv, float scale, int window, const float* sinks,
                  float* scratch, float* probs) {
  const int C = pos0 + T;
  const int rep = H / KV;
#pragma omp parallel for collapse(2) schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      float* s = scratch + static_cast<int64_t>(omp_get_thread_num()) * C;
      const int pos = pos0 + t;
      const int lo = window > 0 ? std::max(0, pos - window + 1) : 0;
      const int kvh = h / rep;
      const float* qh = q + (static_cast<int64_t>(t) * H + h) * dq;
      float mx = sinks ? sinks[h] : -std::numeric_limits<float>::infinity();
      for (int j = lo; j <= pos; ++j) {
        s[j] = dot(qh, kc + (static_cast<int64_t>(j) * KV + kvh) * dq, dq) * scale;
        mx = std::max(mx, s[j]);
      }
      float sum = sinks ? std::exp(sinks[h] - mx) : 0.0f;
      for (int j = lo; j <= pos; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      const float inv = 1.0f / sum;
      float* o = out + (static_cast<int64_t>(t) * H + h) * dv;
      std::fill(o, o + dv, 0.0f);
      float* pr = probs ? probs + (static_cast<int64_t>(t) * H + h) * C : nullptr;
      if (pr) std::fill(pr, pr + C, 0.0f);
      for (int j = lo; j <= pos; ++j) {
        const float p = s[j] * inv;
        if (pr) pr[j] = p;
        const float* vj = vc + (static_cast<int64_t>(j) * KV + kvh) * dv;
        for (int i = 0; i < dv; ++i) o[i] += p * vj[i];
      }
    }
  }
}

void op_attention_backward(float* dq, float* dk, float* dv, float* dsinks, const float* dout,
                           const float* probs, const float* q, const float* k, const float* v,
                           int T, int H, int KV, int dqk, int dvh, float scale, int window) {
  const int rep = H / KV;
  std::fill(dk, dk + static_cast<int64_t>(T) * KV * dqk, 0.0f);
  std::fill(dv, dv + static_cast<int64_t>(T) * KV * dvh, 0.0f);
  // One thread per kv head: the query heads that share it accumulate into the same dk/dv, and
  // each query head's sink gradient is written by one thread.
#pragma omp parallel
  {
    std::vector<float> ds(T);
#pragma omp for schedule(static)
    for (int kvh = 0; kvh < KV; ++kvh) {
      for (int h = kvh * rep; h < (kvh + 1) * rep; ++h) {
        double dsink = 0.0;
        for (int t = 0; t < T; ++t) {
          const int lo = window > 0 ? std::max(0, t - window + 1) : 0;
          const float* p = probs + (static_cast<int64_t>(t) * H + h) * T;
          const float* go = dout + (static_cast<int64_t>(t) * H + h) * dvh;
          // dP[j] = dO . v_j; dS[j] = P[j] * (dP[j] - sum_j' P[j'] dP[j']). The sink has no
          // value (dP = 0): dS_sink = -P_sink * sum_j' P[j'] dP[j'].
          float pdp = 0.0f, psum = 0.0f;
          for (int j = lo; j <= t; ++j) {
            ds[j] = dot(go, v + (static_cast<int64_t>(j) * KV + kvh) * dvh, dvh);
            pdp += p[j] * ds[j];
            psum += p[j];
          }
          if (dsinks) dsink -= static_cast<double>(1.0f - psum) * pdp;
          float* gq = dq + (static_cast<int64_t>(t) * H + h) * dqk;
          std::fill(gq, gq + dqk, 0.0f);
          const float* qt = q + (static_cast<int64_t>(t) * H + h) * dqk;
          for (int j = lo; j <= t; ++j) {
            const float g = p[j] * (ds[j] - pdp) * scale;
            const float* kj = k + (static_cast<int64_t>(j) * KV + kvh) * dqk;
            float* gk = dk + (static_cast<int64_t>(j) * KV + kvh) * dqk;
            float* gv = dv + (static_cast<int64_t>(j) * KV + kvh) * dvh;
            for (int i = 0; i < dqk; ++i) {
              gq[i] += g * kj[i];
              gk[i] += g * qt[i];
            }
            for (int i = 0; i < dvh; ++i) gv[i] += p[j] * go[i];
          }
        }
        if (dsinks) dsinks[h] += static_cast<float>(dsink);
      }
    }
  }
}

void op_mla_attention(float* olat, const float* qlat, const float* qpe, const float* cc,
                      const float* kpe, int T, int pos0, int H, int Lc, int R, float scale,
                      float* scratch) {
  const int C = pos0 + T;
#pragma omp parallel for collapse(2) schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      float* s = scratch + static_cast<int64_t>(omp_get_thread_num()) * C;
      const int pos = pos0 + t;
      const float* ql = qlat + (static_cast<int64_t>(t) * H + h) * Lc;
      const float* qp = qpe + (static_cast<int64_t>(t) * H + h) * R;
      float mx = -std::numeric_limits<float>::infinity();
      for (int j = 0; j <= pos; ++j) {
        s[j] = (dot(ql, cc + static_cast<int64_t>(j) * Lc, Lc) +
                dot(qp, kpe + static_cast<int64_t>(j) * R, R)) *
               scale;
        mx = std::max(mx, s[j]);
      }
      float sum = 0.0f;
      for (int j = 0; j <= pos; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      const float inv = 1.0f / sum;
      float* o = olat + (static_cast<int64_t>(t) * H + h) * Lc;
      std::fill(o, o + Lc, 0.0f);
      for (int j = 0; j <= pos; ++j) {
        const float p = s[j] * inv;
        const float* cj = cc + static_cast<int64_t>(j) * Lc;
        for (int i = 0; i < Lc; ++i) o[i] += p * cj[i];
      }
    }
  }
}

}  // namespace moe
