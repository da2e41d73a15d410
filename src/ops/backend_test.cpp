// The op harness, in the spirit of ggml's test-backend-ops: every op of the backend table
// (backend.h), for every registered backend, over ragged shapes and its dtypes, against a plain
// double-precision reference written from the op's documented definition (backend_test_ref.h);
// every backward against central finite differences of a double-precision forward. The suites
// are parameterised over backends_registered(), so a new backend gets every check by registering.
#include "ops/backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "ops/backend_test_ref.h"
#include "quant/quant.h"

namespace moe {
namespace {

using ref::expect_close;
using ref::rnd;
using ref::to_d;
using ref::Vec;

std::string backend_name(const testing::TestParamInfo<const Backend*>& info) {
  return info.param->name;
}

// Every backend has a name that gtest can use and no other backend has; the CPU is one of them.
TEST(BackendRegistry, NamesAreUniqueIdentifiers) {
  const auto all = backends_registered();
  bool cpu = false;
  for (size_t i = 0; i < all.size(); ++i) {
    const std::string n = all[i]->name;
    EXPECT_FALSE(n.empty());
    for (const char ch : n)
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_') << n;
    for (size_t j = 0; j < i; ++j) EXPECT_NE(n, all[j]->name);
    cpu |= all[i] == &backend_cpu();
  }
  EXPECT_TRUE(cpu);
}

class BackendForward : public testing::TestWithParam<const Backend*> {
 protected:
  const Backend& be() const { return *GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Registered, BackendForward, testing::ValuesIn(backends_registered()),
                         backend_name);

TEST_P(BackendForward, Gemm) {
  struct Shape {
    int M, N, K;
  };
  // One row (matrix-vector), 2-8 rows (multi-row dots), larger (sgemm, split over threads).
  for (const Shape sh :
       {Shape{1, 7, 5}, Shape{3, 17, 33}, Shape{8, 9, 1}, Shape{13, 20, 11}, Shape{70, 130, 120}})
    for (const bool tb : {false, true}) {
      const int M = sh.M, N = sh.N, K = sh.K, lda = K + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
      const auto A = rnd(static_cast<size_t>(M) * lda, 1 + M);
      const auto B = rnd(static_cast<size_t>(tb ? N : K) * ldb, 2 + N);
      std::vector<float> C(static_cast<size_t>(M) * ldc, 7.0f);
      be().gemm(tb, M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc);
      Vec want(static_cast<size_t>(M) * ldc, 7.0);  // padding columns untouched
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double s = 0.0;
          for (int k = 0; k < K; ++k)
            s += static_cast<double>(A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
          want[m * ldc + n] = s;
        }
      expect_close(C.data(), want, 2e-6 * std::sqrt(K),
                   "gemm M=" + std::to_string(M) + " N=" + std::to_string(N) +
                       " K=" + std::to_string(K) + (tb ? " trans_b" : ""));
    }
}

TEST_P(BackendForward, LinearF32) {
  for (const int T : {1, 2, 5, 9, 33})
    for (const bool bias : {false, true}) {
      const int N = 19, K = 37;
      const auto x = rnd(T * K, 3 + T), w = rnd(N * K, 4), b = rnd(N, 5);
      std::vector<float> y(T * N, NAN);
      be().linear_f32(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, T, N, K);
      expect_close(y.data(), ref::linear(to_d(x), to_d(w), bias ? to_d(b) : Vec{}, T, N, K), 1e-5,
                   "linear_f32 T=" + std::to_string(T) + (bias ? " bias" : ""));
    }
}

// Linear over fp32 and raw rows (every GGUF type, as random rows), on the dot path (inputs rounded
// to Q8_0 for Q8_0 / Q4_0) and on the dequantize + sgemm path, against the double product of the
// dequantized weights.
TEST_P(BackendForward, LinearAllDtypes) {
  struct Case {
    QType type;
    int N, K;
  };
  for (const Case c : {Case{QT_F32, 13, 37}, Case{QT_BF16, 21, 50}, Case{QT_Q8_0, 45, 96},
                       Case{QT_Q4_0, 19, 64}, Case{QT_Q4_0, 3, 160}, Case{QT_F16, 21, 50},
                       Case{QT_Q4_1, 13, 64}, Case{QT_Q5_0, 9, 96}, Case{QT_Q5_1, 17, 32},
                       Case{QT_Q2_K, 5, 256}, Case{QT_Q3_K, 7, 512}, Case{QT_Q4_K, 3, 256},
                       Case{QT_Q5_K, 6, 256}, Case{QT_Q6_K, 4, 512}, Case{QT_MXFP4, 11, 64}})
    for (const bool bias : {false, true}) {
      const int N = c.N, K = c.K;
      const auto wf = rnd(static_cast<size_t>(N) * K, 21 + N, 0.05f), bv = rnd(N, 22);
      std::vector<float> wd(wf);  // the weights as the kernels see them
      std::vector<uint8_t> raw;
      Linear l;
      l.out = N, l.in = K, l.b = bias ? bv.data() : nullptr;
      if (c.type == QT_F32) {
        l.w = wf.data();
      } else {
        const int64_t rb = qtype_row_bytes(c.type, K);
        raw.resize(static_cast<size_t>(N * rb));
        if (qtype_is_ggml(c.type)) ref::random_ggml_rows(c.type, raw.data(), N, K, 24 + N);
        for (int n = 0; n < N; ++n) {
          if (!qtype_is_ggml(c.type))
            quantize_row(c.type, wf.data() + static_cast<size_t>(n) * K, raw.data() + n * rb, K);
          dequantize_row(c.type, raw.data() + n * rb, wd.data() + static_cast<size_t>(n) * K, K);
        }
        l.q = QWeight{c.type, raw.data(), rb};
      }
      LinearScratch s;
      linear_scratch_init(&s, K);
      for (const int T : {1, 3, 5, s.dot_max_tokens, s.dot_max_tokens + 1, 23}) {
        const auto x = rnd(static_cast<size_t>(T) * K, 23 + T);
        const bool dot = T <= s.dot_max_tokens;
        std::vector<float> xr(x);  // the dot path sees Q8_0-rounded inputs for block types
        if (dot && qtype_is_block(c.type))
          for (int t = 0; t < T; ++t) {
            const auto r = ref::q8_round(x.data() + static_cast<size_t>(t) * K, K);
            std::copy(r.begin(), r.end(), xr.begin() + static_cast<size_t>(t) * K);
          }
        std::vector<float> y(static_cast<size_t>(T) * N, NAN);
        be().linear(y.data(), x.data(), l, T, &s);
        expect_close(y.data(), ref::linear(to_d(xr), to_d(wd), bias ? to_d(bv) : Vec{}, T, N, K),
                     2e-5,
                     std::string("linear ") + qtype_name(c.type) + " T=" + std::to_string(T) +
                         (bias ? " bias" : "") + (dot ? " (dot)" : " (sgemm)"));
      }
    }
}

TEST_P(BackendForward, Elementwise) {
  for (const int n : {1, 37, 1001}) {
    const auto a = rnd(n, 31 + n, 2.0f), b = rnd(n, 32 + n, 2.0f);
    std::vector<float> y(a);
    be().add(y.data(), b.data(), n);
    Vec want(n);
    for (int i = 0; i < n; ++i) want[i] = static_cast<double>(a[i]) + b[i];
    expect_close(y.data(), want, 1e-7, "add n=" + std::to_string(n));
    y = a;
    be().clamp(y.data(), n, 1.25f);
    for (int i = 0; i < n; ++i)
      want[i] = std::max(-1.25, std::min(1.25, static_cast<double>(a[i])));
    expect_close(y.data(), want, 0.0, "clamp n=" + std::to_string(n));
    be().swiglu(y.data(), a.data(), b.data(), n);
    for (int i = 0; i < n; ++i) want[i] = ref::silu(a[i]) * b[i];
    expect_close(y.data(), want, 1e-6, "swiglu n=" + std::to_string(n));
  }
}

TEST_P(BackendForward, Rmsnorm) {
  for (const int T : {1, 3})
    for (const int D : {1, 7, 65}) {
      const auto x = rnd(T * D, 41 + D, 3.0f), w = rnd(D, 42);
      const auto want = ref::rmsnorm(to_d(x), to_d(w), T, D, 1e-5);
      std::vector<float> y(T * D, NAN);
      be().rmsnorm(y.data(), x.data(), w.data(), T, D, 1e-5f);
      expect_close(y.data(), want, 1e-6, "rmsnorm D=" + std::to_string(D));
      y = x;  // y may alias x
      be().rmsnorm(y.data(), y.data(), w.data(), T, D, 1e-5f);
      expect_close(y.data(), want, 1e-6, "rmsnorm in place D=" + std::to_string(D));
    }
}

TEST_P(BackendForward, RopeTable) {
  for (const bool yarn : {false, true})
    for (const int pos0 : {0, 5, 1000}) {
      const int dim = 10, T = 3, half = dim / 2;
      const RopeSpec spec = ref::rope_spec(yarn, dim);
      std::vector<float> c(T * half, NAN), s(T * half, NAN);
      be().rope_table(c.data(), s.data(), spec, pos0, T);
      Vec wc(T * half), ws(T * half);
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < half; ++i) {
          const float ang = static_cast<float>(pos0 + t) * spec.inv_freq[i];  // fp32 product
          wc[t * half + i] = std::cos(static_cast<double>(ang)) * spec.attention_factor;
          ws[t * half + i] = std::sin(static_cast<double>(ang)) * spec.attention_factor;
        }
      const std::string what =
          std::string(yarn ? "yarn" : "default") + " pos0=" + std::to_string(pos0);
      expect_close(c.data(), wc, 1e-6, "rope_table cos " + what);
      expect_close(s.data(), ws, 1e-6, "rope_table sin " + what);
    }
}

TEST_P(BackendForward, Rope) {
  for (const RopeLayout layout : {ROPE_HALF, ROPE_INTERLEAVED})
    for (const int T : {1, 4}) {
      // 3 heads of 11 floats, rotary part at offset 2 of each head, rows padded to 37.
      const int H = 3, hs = 11, R = 6, off = 2, half = R / 2;
      const int64_t rs = 37;
      const auto x = rnd(static_cast<size_t>(T) * rs, 51 + T);
      const auto ang = rnd(T * half, 52, 3.0f);
      std::vector<float> c(T * half), s(T * half);
      for (int i = 0; i < T * half; ++i) c[i] = std::cos(ang[i]), s[i] = std::sin(ang[i]);
      std::vector<float> y(x);
      be().rope(y.data() + off, T, H, rs, hs, R, c.data(), s.data(), layout);
      Vec full = to_d(x);
      const Vec rot(ref::rope(Vec(full.begin() + off, full.end()), T, H, rs, hs, R, to_d(c),
                              to_d(s), layout));
      std::copy(rot.begin(), rot.end(), full.begin() + off);  // the rest untouched
      expect_close(y.data(), full, 1e-6,
                   std::string("rope ") + (layout == ROPE_HALF ? "half" : "interleaved") +
                       " T=" + std::to_string(T));
    }
}

struct AttnCase {
  int T, pos0, H, KV, dq, dv, window;
  bool sinks;
};

TEST_P(BackendForward, Attention) {
  for (const AttnCase c :
       {AttnCase{1, 0, 1, 1, 4, 4, 0, false}, AttnCase{3, 4, 4, 2, 5, 3, 0, false},
        AttnCase{5, 2, 6, 2, 7, 9, 3, true}, AttnCase{7, 0, 2, 1, 3, 2, 2, true},
        AttnCase{1, 9, 3, 3, 8, 8, 4, true}}) {
    const int C = c.pos0 + c.T;
    const auto q = rnd(c.T * c.H * c.dq, 61 + C), k = rnd(C * c.KV * c.dq, 62 + C);
    const auto v = rnd(C * c.KV * c.dv, 63 + C), sk = rnd(c.H, 64, 2.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dq));
    std::vector<float> out(c.T * c.H * c.dv, NAN), probs(c.T * c.H * C, NAN);
    std::vector<float> scratch(be().attention_scratch(C));
    be().attention(out.data(), q.data(), k.data(), v.data(), c.T, c.pos0, c.H, c.KV, c.dq, c.dv,
                   scale, c.window, c.sinks ? sk.data() : nullptr, scratch.data(), probs.data());
    Vec wo, wp;
    const Vec skd = to_d(sk);
    ref::attention(&wo, &wp, to_d(q), to_d(k), to_d(v), c.T, c.pos0, c.H, c.KV, c.dq, c.dv, scale,
                   c.window, c.sinks ? &skd : nullptr);
    const std::string what = "T=" + std::to_string(c.T) + " pos0=" + std::to_string(c.pos0) +
                             " H=" + std::to_string(c.H) + " KV=" + std::to_string(c.KV) +
                             " window=" + std::to_string(c.window) + (c.sinks ? " sinks" : "");
    expect_close(out.data(), wo, 2e-6, "attention out " + what);
    expect_close(probs.data(), wp, 2e-6, "attention probs " + what);
    std::vector<float> out2(out.size(), NAN);  // probs is optional
    be().attention(out2.data(), q.data(), k.data(), v.data(), c.T, c.pos0, c.H, c.KV, c.dq, c.dv,
                   scale, c.window, c.sinks ? sk.data() : nullptr, scratch.data(), nullptr);
    expect_close(out2.data(), wo, 2e-6, "attention without probs " + what);
  }
}

TEST_P(BackendForward, MlaAttention) {
  struct Case {
    int T, pos0, H, Lc, R;
  };
  for (const Case c : {Case{1, 0, 1, 4, 2}, Case{3, 2, 2, 7, 3}, Case{5, 6, 3, 9, 4}}) {
    const int C = c.pos0 + c.T;
    const auto ql = rnd(c.T * c.H * c.Lc, 71 + C), qp = rnd(c.T * c.H * c.R, 72 + C);
    const auto cc = rnd(C * c.Lc, 73 + C), kp = rnd(C * c.R, 74 + C);
    const float scale = 0.4f;
    std::vector<float> o(c.T * c.H * c.Lc, NAN), scratch(be().attention_scratch(C));
    be().mla_attention(o.data(), ql.data(), qp.data(), cc.data(), kp.data(), c.T, c.pos0, c.H, c.Lc,
                       c.R, scale, scratch.data());
    expect_close(
        o.data(),
        ref::mla(to_d(ql), to_d(qp), to_d(cc), to_d(kp), c.T, c.pos0, c.H, c.Lc, c.R, scale), 2e-6,
        "mla T=" + std::to_string(c.T) + " pos0=" + std::to_string(c.pos0));
  }
}

TEST_P(BackendForward, Adamw) {
  const int n = 37;
  const auto w0 = rnd(n, 81), g = rnd(n, 82), m0 = rnd(n, 83, 0.1f), v0r = rnd(n, 84, 0.1f);
  std::vector<float> v0(n);
  for (int i = 0; i < n; ++i) v0[i] = v0r[i] * v0r[i];
  const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, lr = 1e-2f, wd = 0.1f;
  const int step = 3;
  const float step_size = lr / (1.0f - std::pow(b1, step));
  const float inv_bc2 = 1.0f / (1.0f - std::pow(b2, step));
  std::vector<float> w(w0), m(m0), v(v0);
  be().adamw(w.data(), g.data(), m.data(), v.data(), n, b1, b2, eps, step_size, inv_bc2, lr * wd);
  Vec ww(n), wm(n), wv(n);
  for (int i = 0; i < n; ++i) {
    wm[i] = static_cast<double>(b1) * m0[i] + (1.0 - b1) * g[i];
    wv[i] = static_cast<double>(b2) * v0[i] + (1.0 - b2) * g[i] * static_cast<double>(g[i]);
    const double wdec = w0[i] - static_cast<double>(lr * wd) * w0[i];
    ww[i] = wdec - step_size * wm[i] / (std::sqrt(wv[i] * inv_bc2) + eps);
  }
  expect_close(m.data(), wm, 1e-6, "adamw m");
  expect_close(v.data(), wv, 1e-6, "adamw v");
  expect_close(w.data(), ww, 1e-6, "adamw w");
}

TEST_P(BackendForward, CrossEntropy) {
  for (const int T : {1, 5}) {
    const int V = 11;
    const auto lg = rnd(T * V, 91 + T, 2.0f);
    std::vector<int32_t> tg(T);
    for (int t = 0; t < T; ++t) tg[t] = (t % 3 == 1) ? -1 : (7 * t + 3) % V;
    std::vector<double> rows(T);
    int n = -1;
    const double loss =
        be().cross_entropy(nullptr, lg.data(), tg.data(), T, V, 1.0f, &n, rows.data());
    int want_n = 0;
    for (int t : tg) want_n += t >= 0;
    EXPECT_EQ(n, want_n);
    EXPECT_NEAR(loss, ref::cross_entropy(to_d(lg), tg, T, V, 1.0), 1e-6) << "T=" << T;
  }
}

// ---- Routing ----

// The op's assignments equal the reference's as sets of (token, expert, weight, kept), and the
// same number: the order within a token or an expert is not part of the contract.
void expect_same_assignments(const Routing& r, const ref::Route& w) {
  using Map = std::map<std::pair<int, int>, double>;  // (token, expert) -> weight, < 0 if dropped
  Map got, want;
  for (int a = 0; a < r.A; ++a) got[{r.tok[a], r.expert[a]}] = r.kept[a] ? r.w[a] : -1.0 - r.w[a];
  for (size_t a = 0; a < w.w.size(); ++a)
    want[{w.tok[a], w.expert[a]}] = w.kept[a] ? w.w[a] : -1.0 - w.w[a];
  ASSERT_EQ(r.A, static_cast<int>(w.w.size()));
  ASSERT_EQ(got.size(), want.size()) << "distinct (token, expert) pairs";
  for (auto it = got.begin(), jt = want.begin(); it != got.end(); ++it, ++jt) {
    ASSERT_EQ(it->first, jt->first) << "assignment (token, expert)";
    EXPECT_NEAR(it->second, jt->second, 1e-6)
        << "weight of token " << it->first.first << " expert " << it->first.second;
  }
}

TEST_P(BackendForward, Route) {
  for (const ref::RouteCase& c : ref::route_cases()) {
    SCOPED_TRACE(c.name);
    std::vector<float> lg, bias;
    ref::route_inputs(c, &lg, &bias);
    Routing r;
    routing_init(&r, c.N, c.E, c.K);
    be().route(&r, c.spec, lg.data(), c.bias ? bias.data() : nullptr, nullptr, nullptr, c.N,
               c.capacity_factor, 7, true, 0);
    const ref::Route w = ref::route(c.spec, to_d(lg), to_d(bias), c.N, c.E, c.K, c.capacity_factor);
    expect_same_assignments(r, w);
    EXPECT_EQ(r.capacity, w.capacity);
    EXPECT_EQ(r.dropped, w.dropped);
    if (c.capacity_factor > 0.0f && c.spec.kind != ROUTER_EXPERT_CHOICE) {
      EXPECT_GT(w.dropped, 0);
    }
    expect_close(r.probs.data(), w.probs, 1e-6, "probs");
    std::vector<int> kc(c.E, 0);
    for (size_t a = 0; a < w.kept.size(); ++a) kc[w.expert[a]] += w.kept[a];
    for (int e = 0; e < c.E; ++e) {
      EXPECT_EQ(r.sel_count[e], w.sel_count[e]) << "sel_count " << e;
      EXPECT_EQ(r.kept_count[e], kc[e]) << "kept_count " << e;
    }
    // The loss values.
    const int K = c.K, N = c.N, E = c.E;
    EXPECT_NEAR(be().aux_loss(r, c.spec, 0.3f, 1.0f, nullptr), ref::aux_loss(w, N, E, K, 0.3),
                1e-6);
    EXPECT_NEAR(be().z_loss(lg.data(), N, E, 0.2f, 1.0f, nullptr), ref::z_loss(to_d(lg), N, E, 0.2),
                1e-6);
    EXPECT_NEAR(be().seq_aux_loss(r, c.spec, c.seq_len, 0.4f, 1.0f, nullptr),
                ref::seq_aux_loss(w, N, E, K, c.seq_len, 0.4), 1e-6);
    EXPECT_NEAR(be().device_loss(r, c.spec, c.n_dev, 0.5f, 1.0f, nullptr),
                ref::device_loss(w, N, E, K, c.n_dev, 0.5), 1e-6);
    for (int M : {0, 1, 2})
      EXPECT_NEAR(be().comm_loss(r, c.spec, c.n_dev, M, 0.6f, 1.0f, nullptr),
                  ref::comm_loss(w, N, E, K, c.n_dev, M, 0.6), 1e-6) << "comm loss, M " << M;
  }
}

// Hash and random routing: the documented draws (router.h), K distinct experts per token at
// weight scale / K, uniform balance distribution, no gradient; equal ids hash alike; per-token
// draws keyed on t0 + t, so routing token by token (t0 = t) equals one call over all tokens.
TEST_P(BackendForward, RouteHashAndRandom) {
  const int N = 7, E = 6, K = 3;
  const std::vector<int32_t> ids = {5, 9, 5, 1000, 9, 0, 5};
  for (const RouterKind kind : {ROUTER_HASH, ROUTER_RANDOM}) {
    SCOPED_TRACE(kind == ROUTER_HASH ? "hash" : "random");
    RouterSpec spec;
    spec.kind = kind, spec.scale = 2.0f;
    Routing r, one;
    routing_init(&r, N, E, K);
    routing_init(&one, 1, E, K);
    be().route(&r, spec, nullptr, nullptr, nullptr, ids.data(), N, 0.0f, 11, true, 0);
    ASSERT_EQ(r.A, N * K);
    std::vector<std::vector<int>> sets(N);
    for (int a = 0; a < r.A; ++a) {
      EXPECT_FLOAT_EQ(r.w[a], spec.scale / K);
      sets[r.tok[a]].push_back(r.expert[a]);
    }
    for (int t = 0; t < N; ++t) {
      std::sort(sets[t].begin(), sets[t].end());
      EXPECT_EQ(std::unique(sets[t].begin(), sets[t].end()) - sets[t].begin(), K) << t;
      be().route(&one, spec, nullptr, nullptr, nullptr, ids.data() + t, 1, 0.0f, 11, true, t);
      std::vector<int> s1(one.expert.begin(), one.expert.begin() + K);
      std::sort(s1.begin(), s1.end());
      EXPECT_EQ(s1, sets[t]) << "token " << t << " routed alone";
      for (int e = 0; e < E; ++e) EXPECT_FLOAT_EQ(r.probs[t * E + e], 1.0f / E);
    }
    if (kind == ROUTER_HASH) {
      EXPECT_TRUE(sets[0] == sets[2] && sets[0] == sets[6] && sets[1] == sets[4]);
    }
    for (int t = 0; t < N; ++t) {  // the documented draws
      auto want =
          kind == ROUTER_HASH ? ref::hash_experts(ids[t], E, K) : ref::random_experts(11, t, E, K);
      std::sort(want.begin(), want.end());
      EXPECT_EQ(sets[t], want) << "token " << t;
    }
    std::vector<float> dw(r.A, 1.0f), dl(N * E, 9.0f);
    be().route_backward(r, spec, dw.data(), dl.data(), nullptr);
    for (float g : dl) EXPECT_EQ(g, 0.0f);
  }
}

// Noisy top-k: H = logits + draw * softplus(noise logits), top-k of H, softmax over the K, with
// the documented draws rng_normal(seed, (t0 + t) * E + e).
// Without training, the top-k of the clean logits.
TEST_P(BackendForward, RouteNoisyTopK) {
  const int N = 5, E = 6, K = 2;
  RouterSpec spec;
  spec.kind = ROUTER_NOISY_TOPK, spec.scale = 1.5f;
  const auto lg = rnd(N * E, 1900, 1.5f), nl = rnd(N * E, 1901);
  Routing r;
  routing_init(&r, N, E, K);
  for (const bool train : {false, true}) {
    SCOPED_TRACE(train ? "train" : "eval");
    const int t0 = 4;  // draws keyed on t0 + t
    be().route(&r, spec, lg.data(), nullptr, train ? nl.data() : nullptr, nullptr, N, 0.0f, 3,
               train, t0);
    Vec h(N * E), dh(N * E);
    for (int i = 0; i < N * E; ++i) {
      const double draw = train ? ref::normal(3, static_cast<uint64_t>(t0) * E + i) : 0.0;
      h[i] = lg[i] + draw * std::log1p(std::exp(static_cast<double>(nl[i])));
      dh[i] = draw * ref::sigmoid(nl[i]);
    }
    expect_close(r.noisy.data(), h, 1e-6, "noisy logits");
    expect_close(r.noise.data(), dh, 1e-6, "dH / d(noise logit)");
    RouterSpec o;
    o.topk_then_softmax = true, o.scale = spec.scale;
    const ref::Route w = ref::route(o, h, {}, N, E, K, 0.0);
    expect_same_assignments(r, w);
    Vec p(lg.begin(), lg.end());
    for (int t = 0; t < N; ++t) ref::softmax(p.data() + t * E, E);
    expect_close(r.probs.data(), p, 1e-6, "noisy top-k balance distribution");
  }
}

// ---- Grouped expert FFN ----

// Experts over ragged segments (an empty one, one row, several), fp32 and raw, on the dot path
// (segments up to `dot_max` rows) and the dequantize + sgemm path.
TEST_P(BackendForward, Experts) {
  struct Case {
    QType type;
    ExpertAct act;
    int D, F, dot_max;
    bool save;
  };
  for (const Case c :
       {Case{QT_F32, ACT_SWIGLU, 7, 5, 64, false}, Case{QT_F32, ACT_SWIGLU_OAI, 9, 6, 64, true},
        Case{QT_BF16, ACT_SWIGLU, 10, 6, 64, false}, Case{QT_BF16, ACT_SWIGLU_OAI, 10, 6, 1, false},
        Case{QT_Q8_0, ACT_SWIGLU, 32, 64, 64, false},
        Case{QT_Q8_0, ACT_SWIGLU_OAI, 64, 32, 1, false},
        Case{QT_Q4_0, ACT_SWIGLU_OAI, 32, 64, 64, false},
        Case{QT_Q4_0, ACT_SWIGLU, 64, 32, 1, false},
        Case{QT_Q4_K, ACT_SWIGLU, 256, 256, 64, false},
        Case{QT_Q6_K, ACT_SWIGLU_OAI, 256, 256, 1, false},
        Case{QT_MXFP4, ACT_SWIGLU_OAI, 64, 32, 64, false},
        Case{QT_Q5_0, ACT_SWIGLU, 32, 64, 1, false}}) {
    const std::string what = std::string(qtype_name(c.type)) +
                             (c.act == ACT_SWIGLU ? " swiglu" : " oai") +
                             " dot_max=" + std::to_string(c.dot_max) + (c.save ? " save" : "");
    SCOPED_TRACE(what);
    ref::ExpertSet s;
    s.f.hidden = c.D, s.f.ffn = c.F, s.f.act = c.act, s.f.limit = 1.2f, s.E = 6;
    ref::make_experts(&s, c.type, c.act == ACT_SWIGLU_OAI);
    // Experts 1..5 of 6: rows 3, 0, 1, 6, 2.
    const std::vector<int32_t> off = {0, 3, 3, 4, 10, 12};
    const int R = off.back(), D = c.D;
    ExpertBuffers b;
    expert_buffers_init(&b, s.f, s.E, R, c.save);
    b.quant_dot_max_tokens = b.bf16_dot_max_tokens = c.dot_max;
    const auto xs = rnd(static_cast<size_t>(R) * D, 800 + D);
    std::copy(xs.begin(), xs.end(), b.xs.begin());
    be().experts(&b, s.f, s.ew.data(), ExpertSegments{1, 5, off.data()}, c.save);
    Vec want(static_cast<size_t>(R) * D);
    for (int i = 0; i < 5; ++i) {
      const int n = off[i + 1] - off[i];
      const bool dot = c.type != QT_F32 && !c.save && n <= c.dot_max;
      const bool blk = dot && qtype_is_block(c.type);
      for (int r = off[i]; r < off[i + 1]; ++r) {
        const Vec y = ref::expert_row(s, 1 + i, xs.data() + static_cast<size_t>(r) * D, blk, blk);
        std::copy(y.begin(), y.end(), want.begin() + static_cast<size_t>(r) * D);
      }
    }
    expect_close(b.ys.data(), want, 3e-5, "experts " + what);
  }
}

// ---- Backward ops against central differences of the double-precision forward ----

constexpr double kGradTol = 2e-4;  // of max |g|
constexpr float kPrefill = 0.25f;  // parameter gradients accumulate onto it

class BackendBackward : public testing::TestWithParam<const Backend*> {
 protected:
  const Backend& be() const { return *GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Registered, BackendBackward, testing::ValuesIn(backends_registered()),
                         backend_name);

TEST_P(BackendBackward, Linear) {
  for (const int T : {1, 4, 11})
    for (const bool with_dx_db : {true, false}) {
      const int N = 5, K = 7;
      const auto x = rnd(T * K, 1100 + T), w = rnd(N * K, 1101), b = rnd(N, 1102);
      const Vec coef = to_d(rnd(T * N, 1103 + T));
      const std::vector<float> dy(coef.begin(), coef.end());
      std::vector<float> dx(T * K, 9.0f), dw(N * K, kPrefill), db(N, kPrefill);
      be().linear_backward(with_dx_db ? dx.data() : nullptr, dw.data(),
                           with_dx_db ? db.data() : nullptr, dy.data(), x.data(), w.data(), T, N,
                           K);
      const auto L = [&](const ref::Tensors& in) {
        return ref::dot(coef, ref::linear(in[0], in[1], in[2], T, N, K));
      };
      const ref::Tensors in = {to_d(x), to_d(w), to_d(b)};
      const std::string what = "linear_backward T=" + std::to_string(T);
      ref::expect_grad(dw.data(), ref::fd_grad(L, in, 1), kPrefill, kGradTol, what + " dw");
      if (!with_dx_db) continue;
      ref::expect_grad(dx.data(), ref::fd_grad(L, in, 0), 0.0, kGradTol, what + " dx");
      ref::expect_grad(db.data(), ref::fd_grad(L, in, 2), kPrefill, kGradTol, what + " db");
    }
}

TEST_P(BackendBackward, SwigluAndClamp) {
  const int n = 37;
  const auto g = rnd(n, 1200, 2.0f), u = rnd(n, 1201, 2.0f);
  const Vec coef = to_d(rnd(n, 1202));
  const std::vector<float> dh(coef.begin(), coef.end());
  std::vector<float> dg(n, 9.0f), du(n, 9.0f);
  be().swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), n);
  const auto L = [&](const ref::Tensors& in) {
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += coef[i] * ref::silu(in[0][i]) * in[1][i];
    return s;
  };
  ref::expect_grad(dg.data(), ref::fd_grad(L, {to_d(g), to_d(u)}, 0), 0.0, kGradTol, "swiglu dg");
  ref::expect_grad(du.data(), ref::fd_grad(L, {to_d(g), to_d(u)}, 1), 0.0, kGradTol, "swiglu du");
  // clamp: the gradient passes where the forward did not clamp (inputs kept off the kinks).
  const float c = 1.0f;
  std::vector<float> x(g), y(g), dx(dh);
  for (float& v : x)
    if (std::fabs(std::fabs(v) - c) < 1e-3f) v += 0.01f;
  y = x;
  be().clamp(y.data(), n, c);
  be().clamp_backward(dx.data(), y.data(), n, c);
  const auto Lc = [&](const ref::Tensors& in) {
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += coef[i] * std::max(-1.0 * c, std::min(1.0 * c, in[0][i]));
    return s;
  };
  ref::expect_grad(dx.data(), ref::fd_grad(Lc, {to_d(x)}, 0), 0.0, kGradTol, "clamp dx");
}

TEST_P(BackendBackward, Rmsnorm) {
  for (const int T : {1, 3})
    for (const int D : {1, 6, 33}) {
      const auto x = rnd(T * D, 1300 + D, 2.0f), w = rnd(D, 1301);
      const Vec coef = to_d(rnd(T * D, 1302));
      const std::vector<float> dy(coef.begin(), coef.end());
      std::vector<float> dx(T * D, 9.0f), dw(D, kPrefill);
      be().rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), T, D, 1e-5f);
      const auto L = [&](const ref::Tensors& in) {
        return ref::dot(coef, ref::rmsnorm(in[0], in[1], T, D, 1e-5));
      };
      const std::string what =
          "rmsnorm_backward T=" + std::to_string(T) + " D=" + std::to_string(D);
      ref::expect_grad(dx.data(), ref::fd_grad(L, {to_d(x), to_d(w)}, 0), 0.0, kGradTol,
                       what + " dx");
      ref::expect_grad(dw.data(), ref::fd_grad(L, {to_d(x), to_d(w)}, 1), kPrefill, kGradTol,
                       what + " dw");
    }
}

TEST_P(BackendBackward, Rope) {
  for (const RopeLayout layout : {ROPE_HALF, ROPE_INTERLEAVED}) {
    const int T = 3, H = 2, hs = 9, R = 4, off = 3, half = R / 2;
    const int64_t rs = 21;
    const auto x = rnd(static_cast<size_t>(T) * rs, 1400);
    const auto ang = rnd(T * half, 1401, 3.0f);
    std::vector<float> c(T * half), s(T * half);
    for (int i = 0; i < T * half; ++i) c[i] = std::cos(ang[i]), s[i] = std::sin(ang[i]);
    const Vec coef = to_d(rnd(x.size(), 1402));
    std::vector<float> dx(coef.begin(), coef.end());  // in place; the non-rotary part passes
    be().rope_backward(dx.data() + off, T, H, rs, hs, R, c.data(), s.data(), layout);
    const auto L = [&](const ref::Tensors& in) {
      Vec y = in[0];
      const Vec r =
          ref::rope(Vec(y.begin() + off, y.end()), T, H, rs, hs, R, to_d(c), to_d(s), layout);
      std::copy(r.begin(), r.end(), y.begin() + off);
      return ref::dot(coef, y);
    };
    ref::expect_grad(
        dx.data(), ref::fd_grad(L, {to_d(x)}, 0), 0.0, kGradTol,
        std::string("rope_backward ") + (layout == ROPE_HALF ? "half" : "interleaved"));
  }
}

TEST_P(BackendBackward, Attention) {
  for (const AttnCase c :
       {AttnCase{1, 0, 2, 1, 3, 2, 0, true}, AttnCase{5, 0, 4, 2, 3, 4, 0, false},
        AttnCase{6, 0, 4, 2, 3, 4, 3, true}, AttnCase{7, 0, 3, 3, 5, 2, 2, false},
        AttnCase{5, 0, 2, 1, 4, 3, 0, true}}) {
    const int T = c.T, H = c.H, KV = c.KV, dq = c.dq, dv = c.dv;
    const auto q = rnd(T * H * dq, 1500 + T), k = rnd(T * KV * dq, 1501 + T);
    const auto v = rnd(T * KV * dv, 1502 + T), sk = rnd(H, 1503);
    const float scale = 0.6f;
    std::vector<float> out(T * H * dv), probs(T * H * T), scratch(be().attention_scratch(T));
    const float* sinks = c.sinks ? sk.data() : nullptr;
    be().attention(out.data(), q.data(), k.data(), v.data(), T, 0, H, KV, dq, dv, scale, c.window,
                   sinks, scratch.data(), probs.data());
    const Vec coef = to_d(rnd(out.size(), 1504));
    const std::vector<float> dout(coef.begin(), coef.end());
    std::vector<float> gq(q.size(), 9.0f), gk(k.size(), 9.0f), gv(v.size(), 9.0f), gs(H, kPrefill);
    be().attention_backward(gq.data(), gk.data(), gv.data(), c.sinks ? gs.data() : nullptr,
                            dout.data(), probs.data(), q.data(), k.data(), v.data(), T, H, KV, dq,
                            dv, scale, c.window);
    const auto L = [&](const ref::Tensors& in) {
      Vec o, p;
      ref::attention(&o, &p, in[0], in[1], in[2], T, 0, H, KV, dq, dv, scale, c.window,
                     c.sinks ? &in[3] : nullptr);
      return ref::dot(coef, o);
    };
    const ref::Tensors in = {to_d(q), to_d(k), to_d(v), to_d(sk)};
    const std::string what = "attention_backward T=" + std::to_string(T) +
                             " H=" + std::to_string(H) + " KV=" + std::to_string(KV) +
                             " window=" + std::to_string(c.window) + (c.sinks ? " sinks" : "");
    ref::expect_grad(gq.data(), ref::fd_grad(L, in, 0), 0.0, kGradTol, what + " dq");
    ref::expect_grad(gk.data(), ref::fd_grad(L, in, 1), 0.0, kGradTol, what + " dk");
    ref::expect_grad(gv.data(), ref::fd_grad(L, in, 2), 0.0, kGradTol, what + " dv");
    if (c.sinks)
      ref::expect_grad(gs.data(), ref::fd_grad(L, in, 3), kPrefill, kGradTol, what + " dsinks");
  }
}

// route_backward (L = sum_a coef(token, expert) w_a) and the five losses' dlogits, against
// central differences of the double routing (selections stay fixed under the small steps).
TEST_P(BackendBackward, RouteAndLosses) {
  for (const ref::RouteCase& c : ref::route_cases()) {
    if (c.capacity_factor > 0.0f && c.spec.kind != ROUTER_EXPERT_CHOICE) continue;
    SCOPED_TRACE(c.name);
    const int N = c.N, E = c.E, K = c.K;
    std::vector<float> lg, bias;
    ref::route_inputs(c, &lg, &bias);
    Routing r;
    routing_init(&r, N, E, K);
    be().route(&r, c.spec, lg.data(), c.bias ? bias.data() : nullptr, nullptr, nullptr, N,
               c.capacity_factor, 7, true, 0);
    const Vec coef = to_d(rnd(static_cast<size_t>(N) * E, 1600));
    std::vector<float> dw(r.A), dl(static_cast<size_t>(N) * E, 9.0f);
    for (int a = 0; a < r.A; ++a) dw[a] = static_cast<float>(coef[r.tok[a] * E + r.expert[a]]);
    be().route_backward(r, c.spec, dw.data(), dl.data(), nullptr);
    const Vec bd = to_d(bias);
    const auto route_at = [&](const Vec& x) {
      return ref::route(c.spec, x, bd, N, E, K, c.capacity_factor);
    };
    const auto Lw = [&](const ref::Tensors& in) {
      const ref::Route w = route_at(in[0]);
      double s = 0.0;
      for (size_t a = 0; a < w.w.size(); ++a) s += coef[w.tok[a] * E + w.expert[a]] * w.w[a];
      return s;
    };
    ref::expect_grad(dl.data(), ref::fd_grad(Lw, {to_d(lg)}, 0), 0.0, kGradTol, "route_backward");
    // Each loss accumulates grad_scale * dL/dlogits.
    const float gsc = 0.7f;
    using LossFn = std::function<double(const Vec&)>;
    const std::vector<std::pair<std::string, LossFn>> losses = {
        {"aux", [&](const Vec& x) { return ref::aux_loss(route_at(x), N, E, K, 0.3); }},
        {"z", [&](const Vec& x) { return ref::z_loss(x, N, E, 0.2); }},
        {"seq_aux",
         [&](const Vec& x) { return ref::seq_aux_loss(route_at(x), N, E, K, c.seq_len, 0.4); }},
        {"device",
         [&](const Vec& x) { return ref::device_loss(route_at(x), N, E, K, c.n_dev, 0.5); }},
        {"comm",
         [&](const Vec& x) { return ref::comm_loss(route_at(x), N, E, K, c.n_dev, 2, 0.6); }}};
    for (size_t i = 0; i < losses.size(); ++i) {
      std::fill(dl.begin(), dl.end(), kPrefill);
      if (i == 0) be().aux_loss(r, c.spec, 0.3f, gsc, dl.data());
      if (i == 1) be().z_loss(lg.data(), N, E, 0.2f, gsc, dl.data());
      if (i == 2) be().seq_aux_loss(r, c.spec, c.seq_len, 0.4f, gsc, dl.data());
      if (i == 3) be().device_loss(r, c.spec, c.n_dev, 0.5f, gsc, dl.data());
      if (i == 4) be().comm_loss(r, c.spec, c.n_dev, 2, 0.6f, gsc, dl.data());
      const LossFn& f = losses[i].second;
      Vec want = ref::fd_grad([&](const ref::Tensors& in) { return f(in[0]); }, {to_d(lg)}, 0);
      for (double& g : want) g *= gsc;
      ref::expect_grad(dl.data(), want, kPrefill, kGradTol, losses[i].first + " loss dlogits");
    }
  }
}

// Noisy top-k's backward: dlogits and dnoise_logits against differences of the double forward
// with the (documented) draws held fixed.
TEST_P(BackendBackward, RouteNoisyTopK) {
  const int N = 4, E = 5, K = 2;
  RouterSpec spec;
  spec.kind = ROUTER_NOISY_TOPK, spec.scale = 1.5f;
  const auto lg = rnd(N * E, 1950, 1.5f), nl = rnd(N * E, 1951);
  Routing r;
  routing_init(&r, N, E, K);
  be().route(&r, spec, lg.data(), nullptr, nl.data(), nullptr, N, 0.0f, 5, true, 0);
  Vec draw(N * E);
  for (int i = 0; i < N * E; ++i) draw[i] = ref::normal(5, i);
  const Vec coef = to_d(rnd(N * E, 1952));
  std::vector<float> dw(r.A), dl(N * E, 9.0f), dn(N * E, 9.0f);
  for (int a = 0; a < r.A; ++a) dw[a] = static_cast<float>(coef[r.tok[a] * E + r.expert[a]]);
  be().route_backward(r, spec, dw.data(), dl.data(), dn.data());
  const auto L = [&](const ref::Tensors& in) {
    Vec h(N * E);
    for (int i = 0; i < N * E; ++i) h[i] = in[0][i] + draw[i] * std::log1p(std::exp(in[1][i]));
    RouterSpec o;
    o.topk_then_softmax = true, o.scale = spec.scale;
    const ref::Route w = ref::route(o, h, {}, N, E, K, 0.0);
    double s = 0.0;
    for (size_t a = 0; a < w.w.size(); ++a) s += coef[w.tok[a] * E + w.expert[a]] * w.w[a];
    return s;
  };
  const ref::Tensors in = {to_d(lg), to_d(nl)};
  ref::expect_grad(dl.data(), ref::fd_grad(L, in, 0), 0.0, kGradTol, "noisy dlogits");
  ref::expect_grad(dn.data(), ref::fd_grad(L, in, 1), 0.0, kGradTol, "noisy dnoise_logits");
}

// REINFORCE's score-function gradient and entropy bonus (reinforce_grad) for fixed draws, against
// differences of the double surrogate; it accumulates grad_scale * dL/dlogits and returns the
// mean policy entropy.
TEST_P(BackendBackward, ReinforceScoreFunction) {
  for (const int K : {1, 3}) {
    SCOPED_TRACE(K);
    const int N = 5, E = 6;
    const double beta = 0.3;
    RouterSpec spec;
    spec.kind = ROUTER_REINFORCE;
    const auto lg = rnd(N * E, 1990 + K, 1.2f);
    std::vector<float> adv = rnd(N, 1995 + K);
    adv[2] = 0.0f;  // a token without a target
    Routing r;
    routing_init(&r, N, E, K, spec.kind);
    be().route(&r, spec, lg.data(), nullptr, nullptr, nullptr, N, 0.0f, 5, true, 0);
    std::vector<int> drawn(N * K);  // fixed draws, not the forward's: any sample must do
    for (int t = 0; t < N; ++t)
      for (int k = 0; k < K; ++k) drawn[t * K + k] = r.expert[t * K + k] = (t + 2 * k + 1) % E;
    std::vector<float> dl(N * E, kPrefill);
    const double H = be().reinforce_grad(r, spec, adv.data(), static_cast<float>(beta), 0.7f, dl.data());
    const auto L = [&](const ref::Tensors& in) {
      return ref::reinforce_surrogate(in[0], N, E, K, drawn, adv, beta);
    };
    Vec want = ref::fd_grad(L, {to_d(lg)}, 0);
    for (double& g : want) g *= 0.7;
    ref::expect_grad(dl.data(), want, kPrefill, kGradTol, "reinforce dlogits");
    const std::vector<float> none(N, 0.0f);  // the entropy term alone, beta = 1
    EXPECT_NEAR(H, -ref::reinforce_surrogate(to_d(lg), N, E, K, drawn, none, 1.0), 1e-5);
  }
}

TEST_P(BackendBackward, Experts) {
  for (const ExpertAct act : {ACT_SWIGLU, ACT_SWIGLU_OAI}) {
    SCOPED_TRACE(act == ACT_SWIGLU ? "swiglu" : "oai");
    const bool biases = act == ACT_SWIGLU_OAI;
    ref::ExpertSet s;
    s.f.hidden = 6, s.f.ffn = 5, s.f.act = act, s.f.limit = 0.8f, s.E = 5;
    const int D = 6, F = 5, E = 5;
    ref::make_experts(&s, QT_F32, biases);
    // Experts 1..4 of 5: rows 2, 0, 1, 4.
    const std::vector<int32_t> off = {0, 2, 2, 3, 7};
    const int R = off.back();
    const ExpertSegments seg{1, 4, off.data()};
    ExpertBuffers b;
    expert_buffers_init(&b, s.f, E, R, true);
    const auto xs = rnd(static_cast<size_t>(R) * D, 1700);
    std::copy(xs.begin(), xs.end(), b.xs.begin());
    be().experts(&b, s.f, s.ew.data(), seg, true);
    const Vec coef = to_d(rnd(static_cast<size_t>(R) * D, 1701));
    std::copy(coef.begin(), coef.end(), b.dys.begin());
    std::fill(b.dxs.begin(), b.dxs.end(), 9.0f);
    // Gradient arena: (gate, up, down, gate_b, up_b, down_b) per expert, prefilled.
    std::vector<std::vector<float>> ga(6 * E);
    std::vector<ExpertWeights> grads(E);
    const int sizes[6] = {F * D, F * D, D * F, F, F, D};
    for (int e = 0; e < E; ++e) {
      for (int m = 0; m < 6; ++m) ga[6 * e + m].assign(sizes[m], kPrefill);
      grads[e] = {ga[6 * e].data(),
                  ga[6 * e + 1].data(),
                  ga[6 * e + 2].data(),
                  biases ? ga[6 * e + 3].data() : nullptr,
                  biases ? ga[6 * e + 4].data() : nullptr,
                  biases ? ga[6 * e + 5].data() : nullptr};
    }
    be().experts_backward(&b, s.f, s.ew.data(), grads.data(), seg);
    // Inputs: xs, then per expert its six tensors.
    ref::Tensors in = {to_d(xs)};
    for (int e = 0; e < E; ++e)
      for (const auto* t : {&s.wg[e], &s.wu[e], &s.wd[e], &s.bg[e], &s.bu[e], &s.bd[e]})
        in.push_back(to_d(*t));
    const auto L = [&](const ref::Tensors& x) {
      double l = 0.0;
      for (int i = 0; i < 4; ++i) {
        const int e = 1 + i;
        const Vec *wg = &x[1 + 6 * e], *wu = wg + 1, *wd = wg + 2, *bg = wg + 3, *bu = wg + 4,
                  *bd = wg + 5;
        for (int r = off[i]; r < off[i + 1]; ++r) {
          Vec h(F);
          for (int j = 0; j < F; ++j) {
            double g = (*bg)[j], u = (*bu)[j];
            for (int k = 0; k < D; ++k) {
              g += (*wg)[j * D + k] * x[0][r * D + k];
              u += (*wu)[j * D + k] * x[0][r * D + k];
            }
            h[j] = ref::act(s.f, g, u);
          }
          for (int k = 0; k < D; ++k) {
            double y = (*bd)[k];
            for (int j = 0; j < F; ++j) y += (*wd)[k * F + j] * h[j];
            l += coef[r * D + k] * y;
          }
        }
      }
      return l;
    };
    ref::expect_grad(b.dxs.data(), ref::fd_grad(L, in, 0), 0.0, kGradTol, "experts dxs");
    static const char* kNames[6] = {"gate", "up", "down", "gate_b", "up_b", "down_b"};
    for (int e = 0; e < E; ++e)
      for (int m = 0; m < (biases ? 6 : 3); ++m) {
        // Expert 0 (outside the segments) and expert 2 (no rows) keep their gradients as they were.
        if (e == 0 || e == 2) {
          for (float g : ga[6 * e + m]) ASSERT_EQ(g, kPrefill) << kNames[m] << " e=" << e;
          continue;
        }
        ref::expect_grad(ga[6 * e + m].data(), ref::fd_grad(L, in, 1 + 6 * e + m), kPrefill,
                         kGradTol,
                         "experts d" + std::string(kNames[m]) + " e=" + std::to_string(e));
      }
  }
}

TEST_P(BackendBackward, CrossEntropy) {
  const int T = 6, V = 9;
  const auto lg = rnd(T * V, 1800, 2.0f);
  const std::vector<int32_t> tg = {3, -1, 0, 8, -1, 5};
  std::vector<float> dl(T * V, 9.0f);
  std::vector<double> rows(T);
  int n = 0;
  const double loss =
      be().cross_entropy(dl.data(), lg.data(), tg.data(), T, V, 0.5f, &n, rows.data());
  EXPECT_NEAR(loss, ref::cross_entropy(to_d(lg), tg, T, V, 1.0), 1e-6);
  const auto L = [&](const ref::Tensors& in) { return ref::cross_entropy(in[0], tg, T, V, 0.5); };
  ref::expect_grad(dl.data(), ref::fd_grad(L, {to_d(lg)}, 0), 0.0, kGradTol,
                   "cross_entropy dlogits");
}

}  // namespace
}  // namespace moe
