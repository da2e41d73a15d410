// The backend boundary: every op that model code (src/infer, src/train, src/moe) runs, as one
// table of functions. A backend implements the whole table with these signatures; model code
// calls backend().op(...) and never a backend's kernels, OpenMP or SIMD directly. The CPU backend
// (backend_cpu.cpp: BLAS, OpenMP, the SIMD dot kernels of src/quant) is the only one today.
//
// Each op's contract (shapes, aliasing, accumulate-or-overwrite) is documented once, at the CPU
// declaration named in its comment; parameter gradients accumulate (+=), activation gradients
// overwrite (=). The op harness (backend_test.cpp) checks every op of every registered backend
// against a double-precision reference, and every backward against finite differences of a
// double-precision forward.
#pragma once

#include <cstdint>
#include <vector>

#include "core/specs.h"
#include "ops/experts.h"
#include "ops/linear.h"
#include "ops/router.h"
#include "quant/weight_view.h"

namespace moe {

struct Backend {
  const char* name;

  // Dense algebra (ops.h op_gemm, linear.h linear_forward, ops.h op_linear_backward).
  void (*gemm)(bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
               float* C, int ldc);
  void (*linear)(float* y, const float* x, const Linear& w, int T, LinearScratch* s);
  // y (T, N) = x (T, K) W^T + b for fp32 W (N, K) and b (N) or null (ops.h op_linear).
  void (*linear_f32)(float* y, const float* x, const float* w, const float* b, int T, int N,
                     int K);
  void (*linear_backward)(float* dx, float* dw, float* db, const float* dy, const float* x,
                          const float* w, int T, int N, int K);

  // Elementwise (ops.h op_add, op_clamp*, op_swiglu*).
  void (*add)(float* y, const float* x, int64_t n);
  void (*clamp)(float* x, int64_t n, float c);
  void (*clamp_backward)(float* dx, const float* y, int64_t n, float c);
  void (*swiglu)(float* h, const float* g, const float* u, int64_t n);
  void (*swiglu_backward)(float* dg, float* du, const float* dh, const float* g, const float* u,
                          int64_t n);

  // Normalisation and positions (ops.h op_rmsnorm*, op_rope*).
  void (*rmsnorm)(float* y, const float* x, const float* w, int T, int D, float eps);
  void (*rmsnorm_backward)(float* dx, float* dw, const float* dy, const float* x, const float* w,
                           int T, int D, float eps);
  void (*rope_table)(float* cos_out, float* sin_out, const RopeSpec& rope, int pos0, int T);
  void (*rope)(float* x, int T, int n_heads, int64_t row_stride, int head_stride, int R,
               const float* cos, const float* sin, RopeLayout layout);
  void (*rope_backward)(float* dx, int T, int n_heads, int64_t row_stride, int head_stride, int R,
                        const float* cos, const float* sin, RopeLayout layout);

  // Attention (ops.h op_attention*, op_mla_attention); attention_scratch gives the floats of
  // scratch they need for a context of C positions.
  int64_t (*attention_scratch)(int C);
  void (*attention)(float* out, const float* q, const float* kc, const float* vc, int T, int pos0,
                    int H, int KV, int dq, int dv, float scale, int window, const float* sinks,
                    float* scratch, float* probs);
  void (*attention_backward)(float* dq, float* dk, float* dv, float* dsinks, const float* dout,
                             const float* probs, const float* q, const float* k, const float* v,
                             int T, int H, int KV, int dqk, int dvh, float scale, int window);
  void (*mla_attention)(float* olat, const float* qlat, const float* qpe, const float* cc,
                        const float* kpe, int T, int pos0, int H, int Lc, int R, float scale,
                        float* scratch);

  // Routing and its losses (router.h).
  void (*route)(Routing* r, const RouterSpec& spec, const float* logits, const float* e_bias,
                const float* noise_logits, const int32_t* ids, int N, float capacity_factor,
                uint64_t seed, bool train, int64_t t0);
  void (*route_backward)(const Routing& r, const RouterSpec& spec, const float* dw,
                         float* dlogits, float* dnoise_logits);
  double (*aux_loss)(const Routing& r, const RouterSpec& spec, float alpha, float grad_scale,
                     float* dlogits);
  double (*z_loss)(const float* logits, int N, int E, float beta, float grad_scale,
                   float* dlogits);
  double (*seq_aux_loss)(const Routing& r, const RouterSpec& spec, int seq_len, float alpha,
                         float grad_scale, float* dlogits);
  double (*device_loss)(const Routing& r, const RouterSpec& spec, int n_devices, float alpha,
                        float grad_scale, float* dlogits);
  // REINFORCE routing's score-function gradient and entropy bonus (router_reinforce_grad).
  double (*reinforce_grad)(const Routing& r, const RouterSpec& spec, const float* adv,
                           float entropy, float grad_scale, float* dlogits);
  double (*comm_loss)(const Routing& r, const RouterSpec& spec, int n_devices, int max_devices,
                      float alpha, float grad_scale, float* dlogits);

  // The grouped expert FFN (experts.h).
  void (*experts)(ExpertBuffers* b, const ExpertFfnSpec& f, const ExpertWeights* experts,
                  const ExpertSegments& seg, bool save);
  void (*experts_backward)(ExpertBuffers* b, const ExpertFfnSpec& f, const ExpertWeights* experts,
                           const ExpertWeights* grads, const ExpertSegments& seg);

  // Optimizer (ops.h op_adamw).
  void (*adamw)(float* w, const float* g, float* m, float* v, int64_t n, float b1, float b2,
                float eps, float step_size, float inv_bc2, float decay);

  // Loss head (ops.h op_cross_entropy).
  double (*cross_entropy)(float* dlogits, const float* logits, const int32_t* targets, int T,
                          int V, float scale, int* n_counted, double* row_loss);
};

const Backend& backend_cpu();
// Every backend built into this binary (the op harness runs them all).
std::vector<const Backend*> backends_registered();
// The backend model code runs on: the CPU unless backend_select chose another.
const Backend& backend();
void backend_select(const Backend& b);

}  // namespace moe
