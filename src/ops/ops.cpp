#include "ops/ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace moe {

void op_linear(float* y, const float* x, const float* w, const float* b, int T, int N, int K) {
  if (T <= 0 || N <= 0) return;
  if (b) {
    for (int t = 0; t < T; ++t) std::copy(b, b + N, y + static_cast<int64_t>(t) * N);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, x, K, w, K, b ? 1.0f : 0.0f,
              y, N);
}

void op_gemm(bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
             float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
              lda, B, ldb, 0.0f, C, ldc);
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

void op_clamp(float* x, int64_t n, float c) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::min(c, std::max(-c, x[i]));
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

void op_rope(float* x, int T, int n_heads, int64_t row_stride, int head_stride, int R,
             const float* cos, const float* sin, RopeLayout layout) {
  const int half = R / 2;
  for (int t = 0; t < T; ++t) {
    const float* c = cos + static_cast<int64_t>(t) * half;
    const float* s = sin + static_cast<int64_t>(t) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + t * row_stride + static_cast<int64_t>(h) * head_stride;
      if (layout == ROPE_HALF) {
        for (int i = 0; i < half; ++i) {
          float a = v[i], b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      } else {
        for (int i = 0; i < half; ++i) {
          float a = v[2 * i], b = v[2 * i + 1];
          v[2 * i] = a * c[i] - b * s[i];
          v[2 * i + 1] = b * c[i] + a * s[i];
        }
      }
    }
  }
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
inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

void op_attention(float* out, const float* q, const float* kc, const float* vc, int T, int pos0,
                  int H, int KV, int dq, int dv, float scale, int window, const float* sinks,
                  float* scratch) {
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
      for (int j = lo; j <= pos; ++j) {
        const float p = s[j] * inv;
        const float* vj = vc + (static_cast<int64_t>(j) * KV + kvh) * dv;
        for (int i = 0; i < dv; ++i) o[i] += p * vj[i];
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
