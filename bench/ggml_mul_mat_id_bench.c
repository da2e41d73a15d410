// Times ggml_mul_mat_id (ggml's CPU backend) at MoE expert-projection shapes that
// test-backend-ops does not list. Built and run by bench/ggml_peer.sh against a ggml checkout;
// it is not part of the moe.cpp build.
//
// Usage: ggml_mul_mat_id_bench THREADS TYPES N_LIST CASE...
//   TYPES   comma-separated ggml type names of the expert matrices, e.g. f32,q8_0,q4_0
//   N_LIST  comma-separated token counts, e.g. 1,8,64,512
//   CASE    n_mats:n_used:m:k, e.g. 64:8:1024:2048 (OLMoE-1B-7B gate/up)
//
// Each case is set up as test-backend-ops's test_mul_mat_id(type_a, f32, n_mats, n_used, b=false,
// m, n, k): as (k, m, n_mats) uniform in [-1, 1] (quantized with ggml_quantize_chunk), b (k, n_used,
// n) f32, ids (n_used, n) each row a prefix of a random permutation of the experts, out (m, n_used,
// n); flops = 2 m k n n_used. After one warm-up run the same graph (ids fixed, as in
// test-backend-ops) is computed in 5 rounds of at least 0.25 s; the best round's time per run is
// the result. Output: one line per case, in test-backend-ops's console format plus the median:
//   MUL_MAT_ID(type_a=q4_0,type_b=f32,n_mats=64,n_used=8,b=0,m=1024,n=1,k=2048): R runs - U us/run - G GFLOPS (median of 5 rounds: M us/run)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-cpu.h"
#include "ggml.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng_next(void) {  // xorshift64*
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dULL;
}

static float rng_uniform(void) {  // [-1, 1)
  return (float)((rng_next() >> 40) * (2.0 / 16777216.0) - 1.0);
}

static int parse_list(const char* s, char out[][16], int max) {
  int n = 0;
  while (*s && n < max) {
    const char* e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    if (len == 0 || len >= 16) return -1;
    memcpy(out[n], s, len);
    out[n][len] = 0;
    ++n;
    s += len + (e ? 1 : 0);
  }
  return n;
}

static int type_from_name(const char* name, enum ggml_type* t) {
  for (int i = 0; i < GGML_TYPE_COUNT; ++i) {
    const char* tn = ggml_type_name((enum ggml_type)i);
    if (tn && strcmp(tn, name) == 0 && ggml_blck_size((enum ggml_type)i) > 0) {
      *t = (enum ggml_type)i;
      return 1;
    }
  }
  return 0;
}

// Fills the expert matrices: uniform [-1, 1] floats, quantized row by row for block types.
static void fill_experts(struct ggml_tensor* as) {
  const int64_t k = as->ne[0], m = as->ne[1], E = as->ne[2];
  float* src = malloc(sizeof(float) * k * m);
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t i = 0; i < k * m; ++i) src[i] = rng_uniform();
    char* dst = (char*)as->data + e * as->nb[2];
    if (as->type == GGML_TYPE_F32) memcpy(dst, src, sizeof(float) * k * m);
    else ggml_quantize_chunk(as->type, src, dst, 0, m, k, NULL);
  }
  free(src);
}

static void run_case(enum ggml_type type, int n_mats, int n_used, int64_t m, int64_t k,
                     struct ggml_tensor* as, int64_t n, int n_threads) {
  const size_t mem = ggml_tensor_overhead() * 8 + ggml_graph_overhead() +
                     sizeof(float) * (size_t)(k * n_used * n + m * n_used * n) +
                     sizeof(int32_t) * (size_t)(n_mats * n) + 4096;
  struct ggml_init_params ip = {mem, NULL, false};
  struct ggml_context* ctx = ggml_init(ip);
  struct ggml_tensor* ids_full = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_mats, n);
  struct ggml_tensor* ids = ggml_view_2d(ctx, ids_full, n_used, n, ids_full->nb[1], 0);
  struct ggml_tensor* b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, k, n_used, n);
  for (int64_t i = 0; i < k * n_used * n; ++i) ((float*)b->data)[i] = rng_uniform();
  for (int64_t r = 0; r < n; ++r) {
    int32_t* row = (int32_t*)((char*)ids_full->data + r * ids_full->nb[1]);
    for (int i = 0; i < n_mats; ++i) row[i] = i;
    for (int i = n_mats - 1; i > 0; --i) {  // Fisher-Yates
      const int j = (int)(rng_next() % (uint64_t)(i + 1));
      const int32_t t = row[i];
      row[i] = row[j];
      row[j] = t;
    }
  }
  struct ggml_tensor* out = ggml_mul_mat_id(ctx, as, b, ids);
  struct ggml_cgraph* gf = ggml_new_graph(ctx);
  ggml_build_forward_expand(gf, out);
  struct ggml_cplan plan = ggml_graph_plan(gf, n_threads, NULL);
  uint8_t* work = plan.work_size ? malloc(plan.work_size) : NULL;
  plan.work_data = work;
  ggml_graph_compute(gf, &plan);  // warm-up
  // ROUNDS rounds of at least ROUND_US each; the best round is the result (the machine may be
  // shared), the median is printed beside it.
  enum { ROUNDS = 5, ROUND_US = 250000 };
  double round_us[ROUNDS];
  int64_t runs = 0;
  for (int r = 0; r < ROUNDS; ++r) {
    int64_t n_r = 0;
    const int64_t t0 = ggml_time_us();
    int64_t t1 = t0;
    while (t1 - t0 < ROUND_US) {
      ggml_graph_compute(gf, &plan);
      ++n_r;
      t1 = ggml_time_us();
    }
    round_us[r] = (double)(t1 - t0) / (double)n_r;
    runs += n_r;
  }
  for (int i = 1; i < ROUNDS; ++i)  // insertion sort
    for (int j = i; j > 0 && round_us[j] < round_us[j - 1]; --j) {
      const double t = round_us[j];
      round_us[j] = round_us[j - 1];
      round_us[j - 1] = t;
    }
  const double us = round_us[0];
  const double flops = 2.0 * (double)m * (double)k * (double)n * (double)n_used;
  printf("MUL_MAT_ID(type_a=%s,type_b=f32,n_mats=%d,n_used=%d,b=0,m=%lld,n=%lld,k=%lld): "
         "%lld runs - %.2f us/run - %.2f GFLOPS (median of %d rounds: %.2f us/run)\n",
         ggml_type_name(type), n_mats, n_used, (long long)m, (long long)n, (long long)k,
         (long long)runs, us, flops / us * 1e-3, ROUNDS, round_us[ROUNDS / 2]);
  fflush(stdout);
  free(work);
  ggml_free(ctx);
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s THREADS TYPES N_LIST n_mats:n_used:m:k...\n", argv[0]);
    return 2;
  }
  const int n_threads = atoi(argv[1]);
  char types[8][16], ns[16][16];
  const int n_types = parse_list(argv[2], types, 8), n_ns = parse_list(argv[3], ns, 16);
  if (n_threads <= 0 || n_types <= 0 || n_ns <= 0) {
    fprintf(stderr, "bad THREADS, TYPES or N_LIST\n");
    return 2;
  }
  ggml_time_init();
  ggml_cpu_init();
  for (int c = 4; c < argc; ++c) {
    int n_mats, n_used;
    long long m, k;
    if (sscanf(argv[c], "%d:%d:%lld:%lld", &n_mats, &n_used, &m, &k) != 4 || n_used > n_mats ||
        n_used <= 0 || m <= 0 || k <= 0) {
      fprintf(stderr, "bad case '%s' (expected n_mats:n_used:m:k)\n", argv[c]);
      return 2;
    }
    for (int ti = 0; ti < n_types; ++ti) {
      enum ggml_type type;
      if (!type_from_name(types[ti], &type)) {
        fprintf(stderr, "unknown ggml type '%s'\n", types[ti]);
        return 2;
      }
      if (k % ggml_blck_size(type) != 0) {
        fprintf(stderr, "k %lld is not a multiple of %s's block size\n", k, types[ti]);
        return 2;
      }
      const size_t bytes = ggml_row_size(type, k) * (size_t)m * (size_t)n_mats;
      struct ggml_init_params ip = {bytes + ggml_tensor_overhead() + 4096, NULL, false};
      struct ggml_context* wctx = ggml_init(ip);
      if (!wctx) {
        fprintf(stderr, "cannot allocate %zu bytes of expert weights\n", bytes);
        return 1;
      }
      struct ggml_tensor* as = ggml_new_tensor_3d(wctx, type, k, m, n_mats);
      fill_experts(as);
      for (int ni = 0; ni < n_ns; ++ni)
        run_case(type, n_mats, n_used, m, k, as, atoll(ns[ni]), n_threads);
      ggml_free(wctx);
    }
  }
  ggml_quantize_free();
  return 0;
}
