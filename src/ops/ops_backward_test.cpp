// Gradient checks: every backward kernel (fp32) against central finite differences of a plain
// double-precision forward, on the scalar loss L = sum(dy * y) with a fixed random dy.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "ops/ops.h"
#include "test_util.h"

namespace moe {
namespace {

using VecD = std::vector<double>;

using moe_test::randn;
VecD to_d(const std::vector<float>& v) { return VecD(v.begin(), v.end()); }

// d loss / d x by central differences in double.
VecD fd_grad(VecD x, const std::function<double(const VecD&)>& loss, double eps = 1e-6) {
  VecD g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double keep = x[i];
    x[i] = keep + eps;
    double lp = loss(x);
    x[i] = keep - eps;
    double lm = loss(x);
    x[i] = keep;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

// Relative error measured against the gradient's largest magnitude.
void expect_grad_near(const std::vector<float>& got, const VecD& want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double mx = 1e-12;
  for (double w : want) mx = std::max(mx, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], rel * mx) << what << "[" << i << "]";
}

double dotd(const VecD& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(OpsBackward, Linear) {
  const int T = 4, N = 5, K = 6;
  auto x = randn(T * K, 1), w = randn(N * K, 2), b = randn(N, 3), dy = randn(T * N, 4);
  std::vector<float> dx(T * K), dw(N * K, 0.0f), db(N, 0.0f);
  op_linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), T, N, K);
  auto fwd = [&](const VecD& X, const VecD& W, const VecD& B) {
    double L = 0;
    for (int t = 0; t < T; ++t)
      for (int n = 0; n < N; ++n) {
        double y = B[n];
        for (int k = 0; k < K; ++k) y += X[t * K + k] * W[n * K + k];
        L += dy[t * N + n] * y;
      }
    return L;
  };
  VecD X = to_d(x), W = to_d(w), B = to_d(b);
  expect_grad_near(dx, fd_grad(X, [&](const VecD& v) { return fwd(v, W, B); }), 1e-5, "dx");
  expect_grad_near(dw, fd_grad(W, [&](const VecD& v) { return fwd(X, v, B); }), 1e-5, "dw");
  expect_grad_near(db, fd_grad(B, [&](const VecD& v) { return fwd(X, W, v); }), 1e-5, "db");
  // parameter gradients accumulate
  op_linear_backward(nullptr, dw.data(), nullptr, dy.data(), x.data(), w.data(), T, N, K);
  VecD dw2 = fd_grad(W, [&](const VecD& v) { return 2 * fwd(X, v, B); });
  expect_grad_near(dw, dw2, 1e-5, "dw accumulated");
}

TEST(OpsBackward, RmsNorm) {
  const int T = 3, D = 7;
  const float eps = 1e-5f;
  auto x = randn(T * D, 5), w = randn(D, 6), dy = randn(T * D, 7);
  std::vector<float> dx(T * D), dw(D, 0.0f);
  op_rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), T, D, eps);
  auto fwd = [&](const VecD& X, const VecD& W) {
    double L = 0;
    for (int t = 0; t < T; ++t) {
      double ss = 0;
      for (int i = 0; i < D; ++i) ss += X[t * D + i] * X[t * D + i];
      double r = 1 / std::sqrt(ss / D + eps);
      for (int i = 0; i < D; ++i) L += dy[t * D + i] * W[i] * X[t * D + i] * r;
    }
    return L;
  };
  VecD X = to_d(x), W = to_d(w);
  expect_grad_near(dx, fd_grad(X, [&](const VecD& v) { return fwd(v, W); }), 1e-5, "dx");
  expect_grad_near(dw, fd_grad(W, [&](const VecD& v) { return fwd(X, v); }), 1e-5, "dw");
}

TEST(OpsBackward, Rope) {
  RopeSpec r;
  r.dim = 6;
  r.theta = 50.0;
  r.attention_factor = 1.1;
  for (int i = 0; i < 3; ++i) r.inv_freq.push_back(static_cast<float>(std::pow(50.0, -2.0 * i / 6)));
  const int T = 3, H = 2;
  std::vector<float> cs(T * 3), sn(T * 3);
  op_rope_table(cs.data(), sn.data(), r, 0, T);
  for (RopeLayout layout : {ROPE_HALF, ROPE_INTERLEAVED}) {
    auto x = randn(T * H * 6, 8), dy = randn(T * H * 6, 9);
    auto dx = dy;
    op_rope_backward(dx.data(), T, H, H * 6, 6, 6, cs.data(), sn.data(), layout);
    // L = dy . rope(x) is linear in x; its gradient is exact with finite differences of the op.
    auto loss = [&](const VecD& X) {
      std::vector<float> xf(X.begin(), X.end());
      op_rope(xf.data(), T, H, H * 6, 6, 6, cs.data(), sn.data(), layout);
      return dotd(to_d(dy), xf);
    };
    expect_grad_near(dx, fd_grad(to_d(x), loss, 1e-2), 1e-5, "dx");
  }
}

TEST(OpsBackward, SwiGlu) {
  const int n = 11;
  auto g = randn(n, 10, 2.0f), u = randn(n, 11), dh = randn(n, 12);
  std::vector<float> dg(n), du(n);
  op_swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), n);
  auto fwd = [&](const VecD& G, const VecD& U) {
    double L = 0;
    for (int i = 0; i < n; ++i) L += dh[i] * G[i] / (1 + std::exp(-G[i])) * U[i];
    return L;
  };
  VecD G = to_d(g), U = to_d(u);
  expect_grad_near(dg, fd_grad(G, [&](const VecD& v) { return fwd(v, U); }), 1e-5, "dg");
  expect_grad_near(du, fd_grad(U, [&](const VecD& v) { return fwd(G, v); }), 1e-5, "du");
}

// L = sum dout . attention(q, k, v) in double: causal GQA with an optional window and sinks.
double attention_loss_ref(const VecD& Q, const VecD& K, const VecD& Vv, const VecD& S,
                          const std::vector<float>& dout, int T, int H, int KV, int dq, int dv,
                          double scale, int window) {
  double L = 0;
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / KV), lo = window > 0 ? std::max(0, t - window + 1) : 0;
      std::vector<double> s(t + 1, 0.0);
      double mx = S.empty() ? -1e300 : S[h];
      for (int j = lo; j <= t; ++j) {
        double d = 0;
        for (int i = 0; i < dq; ++i) d += Q[(t * H + h) * dq + i] * K[(j * KV + g) * dq + i];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      double z = S.empty() ? 0.0 : std::exp(S[h] - mx);
      for (int j = lo; j <= t; ++j) z += (s[j] = std::exp(s[j] - mx));
      for (int j = lo; j <= t; ++j)
        for (int i = 0; i < dv; ++i)
          L += dout[(t * H + h) * dv + i] * s[j] / z * Vv[(j * KV + g) * dv + i];
    }
  return L;
}

void attention_grad_check(int window, bool sinks) {
  const int T = 6, H = 4, KV = 2, dq = 3, dv = 2;
  const float scale = 0.7f;
  auto q = randn(T * H * dq, 13), k = randn(T * KV * dq, 14), v = randn(T * KV * dv, 15),
       dout = randn(T * H * dv, 16), sk = randn(H, 17);
  std::vector<float> out(T * H * dv), probs(T * H * T), scratch(omp_get_max_threads() * T);
  op_attention(out.data(), q.data(), k.data(), v.data(), T, 0, H, KV, dq, dv, scale, window,
               sinks ? sk.data() : nullptr, scratch.data(), probs.data());
  std::vector<float> gq(T * H * dq), gk(T * KV * dq), gv(T * KV * dv), gs(H, 0.5f);
  op_attention_backward(gq.data(), gk.data(), gv.data(), sinks ? gs.data() : nullptr, dout.data(),
                        probs.data(), q.data(), k.data(), v.data(), T, H, KV, dq, dv, scale,
                        window);
  VecD Q = to_d(q), K = to_d(k), Vv = to_d(v), S = sinks ? to_d(sk) : VecD();
  auto fwd = [&](const VecD& a, const VecD& b, const VecD& c, const VecD& d) {
    return attention_loss_ref(a, b, c, d, dout, T, H, KV, dq, dv, scale, window);
  };
  // The forward in fp32 against the double reference.
  EXPECT_NEAR(dotd(to_d(dout), out), fwd(Q, K, Vv, S), 1e-5);
  expect_grad_near(gq, fd_grad(Q, [&](const VecD& x) { return fwd(x, K, Vv, S); }), 1e-4, "dq");
  expect_grad_near(gk, fd_grad(K, [&](const VecD& x) { return fwd(Q, x, Vv, S); }), 1e-4, "dk");
  expect_grad_near(gv, fd_grad(Vv, [&](const VecD& x) { return fwd(Q, K, x, S); }), 1e-4, "dv");
  if (sinks) {
    for (float& x : gs) x -= 0.5f;  // sink gradients accumulate onto what was there
    expect_grad_near(gs, fd_grad(S, [&](const VecD& x) { return fwd(Q, K, Vv, x); }), 1e-4,
                     "dsinks");
  }
}

TEST(OpsBackward, AttentionGqa) { attention_grad_check(0, false); }
TEST(OpsBackward, AttentionWindow) { attention_grad_check(3, false); }
TEST(OpsBackward, AttentionSinks) { attention_grad_check(0, true); }
TEST(OpsBackward, AttentionWindowSinks) { attention_grad_check(2, true); }

TEST(OpsBackward, Clamp) {
  const int n = 40;
  const float c = 0.8f;
  auto x = randn(n, 18), dy = randn(n, 19);
  auto y = x;
  op_clamp(y.data(), n, c);
  int clamped = 0;
  for (float v : x) clamped += std::fabs(v) > c ? 1 : 0;
  ASSERT_GT(clamped, 2);
  ASSERT_LT(clamped, n - 2);
  auto dx = dy;
  op_clamp_backward(dx.data(), y.data(), n, c);
  auto fwd = [&](const VecD& X) {
    double L = 0;
    for (int i = 0; i < n; ++i) L += dy[i] * std::min<double>(c, std::max<double>(-c, X[i]));
    return L;
  };
  expect_grad_near(dx, fd_grad(to_d(x), fwd), 1e-6, "dx");
}

TEST(OpsBackward, CrossEntropy) {
  const int T = 4, V = 6;
  auto lg = randn(T * V, 17, 2.0f);
  std::vector<int32_t> tgt = {3, -1, 0, 5};
  std::vector<float> dl(T * V);
  int n = 0;
  std::vector<double> rows(T);
  double loss = op_cross_entropy(dl.data(), lg.data(), tgt.data(), T, V, 0.5f, &n, rows.data());
  EXPECT_EQ(n, 3);
  auto fwd = [&](const VecD& L) {
    double s = 0;
    for (int t = 0; t < T; ++t) {
      if (tgt[t] < 0) continue;
      double mx = -1e300, z = 0;
      for (int i = 0; i < V; ++i) mx = std::max(mx, L[t * V + i]);
      for (int i = 0; i < V; ++i) z += std::exp(L[t * V + i] - mx);
      s += mx + std::log(z) - L[t * V + tgt[t]];
    }
    return s / 3;
  };
  EXPECT_NEAR(loss, fwd(to_d(lg)), 1e-6);
  VecD g = fd_grad(to_d(lg), fwd);
  for (double& x : g) x *= 0.5;  // scale
  expect_grad_near(dl, g, 1e-5, "dlogits");
}

}  // namespace
}  // namespace moe
