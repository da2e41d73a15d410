// The training MoE block: forward equals the inference layer, and gradients of every input and
// parameter match finite differences, for several routers, capacity dropping and shared experts.
#include "moe/moe_train.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "moe/moe_layer.h"
#include "moe_block.h"
#include "ref_routing.h"

namespace moe {
namespace {

// L = sum(cf * out) + balancing losses.
double loss_of(Block& b, MoeActs* a, const MoeLossSpec& ls, const std::vector<float>& x,
               const std::vector<int32_t>& ids, const std::vector<float>& coef, int N, int seq,
               std::vector<float>* out) {
  out->assign(static_cast<size_t>(N) * b.c.hidden, 0.0f);
  MoeLosses L = moe_train_forward(out->data(), a, b.c, b.w, b.p.data() + b.noise, ls, x.data(),
                                  ids.data(), N, seq, 7, true);
  double s = L.total();
  for (size_t i = 0; i < out->size(); ++i) s += static_cast<double>(coef[i]) * (*out)[i];
  return s;
}

// fd_h: the finite-difference step; the clamped activation needs a small one (its kinks).
void grad_check(RouterSpec spec, int shared, bool gate, MoeLossSpec ls, int N = 6,
                bool oai = false, float fd_h = 1e-2f, int top_k = 2) {
  Block b(spec, shared, gate, oai);
  b.c.top_k = top_k;
  const int D = b.c.hidden, seq = 3;
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(N * D), coef(N * D);
  for (float& v : x) v = nd(gen);
  for (float& v : coef) v = nd(gen);
  std::vector<int32_t> ids(N);
  for (int t = 0; t < N; ++t) ids[t] = t % 3;
  MoeActs a;
  moe_acts_init(&a, b.c, N);
  std::vector<float> out;
  loss_of(b, &a, ls, x, ids, coef, N, seq, &out);
  if (oai) {  // the clamps must be exercised on both inputs
    int g_clamped = 0, u_clamped = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(a.plan.rows) * b.c.expert_ffn; ++i) {
      g_clamped += a.ex.g[i] > b.c.act_limit;
      u_clamped += std::fabs(a.ex.u[i]) > b.c.act_limit;
    }
    EXPECT_GT(g_clamped, 0);
    EXPECT_GT(u_clamped, 0);
  }
  const std::vector<int32_t> sel(a.routing.expert.begin(), a.routing.expert.begin() + a.routing.A);
  const std::vector<char> kept(a.routing.kept.begin(), a.routing.kept.begin() + a.routing.A);
  std::vector<float> dx(N * D);
  moe_train_backward(dx.data(), &a, b.c, b.w, b.p.data() + b.noise, b.gw, b.g.data() + b.noise, ls,
                     x.data(), coef.data(), seq, 1.0f);
  auto same = [&]() {
    return std::equal(sel.begin(), sel.end(), a.routing.expert.begin()) &&
           std::equal(kept.begin(), kept.end(), a.routing.kept.begin());
  };
  const float h = fd_h;
  int checked = 0, total = 0;
  auto check = [&](std::vector<float>& v, const std::vector<float>& analytic, size_t i0, size_t n,
                   const char* what) {
    double mx = 1e-6;
    for (size_t i = i0; i < i0 + n; ++i) mx = std::max(mx, std::fabs(static_cast<double>(analytic[i])));
    for (size_t i = i0; i < i0 + n; ++i) {
      const float keep = v[i];
      double f[4];
      const float off[4] = {-2 * h, -h, h, 2 * h};
      bool ok = true;
      for (int j = 0; j < 4; ++j) {
        v[i] = keep + off[j];
        f[j] = loss_of(b, &a, ls, x, ids, coef, N, seq, &out);
        ok &= same();
      }
      v[i] = keep;
      ++total;
      if (!ok) continue;
      const double fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
      EXPECT_NEAR(analytic[i], fd, 3e-3 * mx + 1e-5) << what << " i=" << i - i0;
      ++checked;
    }
  };
  check(x, dx, 0, x.size(), "dx");
  for (size_t k = 0; k < b.ranges.size(); ++k) check(b.p, b.g, b.ranges[k].first, b.ranges[k].second, "param");
  EXPECT_GT(checked, total * 2 / 3);
}

TEST(MoeTrainGrad, SoftmaxTopKAuxZ) {
  MoeLossSpec ls;
  ls.aux = 0.1f;
  ls.z = 0.01f;
  grad_check(RouterSpec(), 0, false, ls);
}

TEST(MoeTrainGrad, SigmoidBiasSharedSeqDevice) {
  RouterSpec s;
  s.score = SCORE_SIGMOID;
  s.has_correction_bias = true;
  s.norm_topk = true;
  s.norm_eps = 1e-20f;
  s.scale = 2.0f;
  MoeLossSpec ls;
  ls.seq_aux = 0.1f;
  ls.device = 0.1f;
  ls.n_devices = 2;
  grad_check(s, 3, false, ls);
}

TEST(MoeTrainGrad, GatedSharedExpertRenormCapacity) {
  RouterSpec s;
  s.norm_topk = true;
  MoeLossSpec ls;
  ls.capacity_factor = 0.75f;
  ls.aux = 0.05f;
  grad_check(s, 4, true, ls, 8);
}

// gpt-oss: top-k then softmax with a router bias, clamped SwiGLU, expert biases.
TEST(MoeTrainGrad, GptOssClampedSwigluBiases) {
  RouterSpec s;
  s.topk_then_softmax = true;
  MoeLossSpec ls;
  ls.aux = 0.05f;
  grad_check(s, 0, false, ls, 6, true, 1e-3f);
}

TEST(MoeTrainGrad, NoisyTopK) {
  RouterSpec s;
  s.kind = ROUTER_NOISY_TOPK;
  MoeLossSpec ls;
  ls.aux = 0.05f;
  grad_check(s, 0, false, ls);
}

TEST(MoeTrainGrad, ExpertChoice) {
  RouterSpec s;
  s.kind = ROUTER_EXPERT_CHOICE;
  MoeLossSpec ls;
  ls.capacity_factor = 1.0f;
  grad_check(s, 0, false, ls);
}

TEST(MoeTrainGrad, HashRouting) {
  RouterSpec s;
  s.kind = ROUTER_HASH;
  grad_check(s, 2, false, MoeLossSpec());
}

// BASE: the balanced assignment (2 tokens per expert) with its sigmoid gate, and a shared expert.
TEST(MoeTrainGrad, BaseBalancedAssignment) {
  RouterSpec s;
  s.kind = ROUTER_BASE;
  grad_check(s, 3, false, MoeLossSpec(), 8, false, 1e-2f, 1);
}

TEST(MoeTrainGrad, SinkhornTop2) {
  RouterSpec s;
  s.kind = ROUTER_SINKHORN;
  MoeLossSpec ls;
  ls.z = 0.01f;
  grad_check(s, 0, false, ls);
}

// REINFORCE's pathwise gradient through the sampled experts' weights (the score-function part
// needs the per-token rewards: router_rl_test.cpp, train_model_test.cpp).
TEST(MoeTrainGrad, ReinforceSampledExperts) {
  RouterSpec s;
  s.kind = ROUTER_REINFORCE;
  s.norm_topk = true;
  grad_check(s, 0, false, MoeLossSpec());
}

// With a token-choice router the training forward computes what the inference layer computes.
TEST(MoeTrain, ForwardEqualsInferenceLayer) {
  for (bool sigmoid : {false, true}) {
    RouterSpec s;
    if (sigmoid) {
      s.score = SCORE_SIGMOID;
      s.has_correction_bias = true;
      s.norm_topk = true;
      s.scale = 1.5f;
    }
    Block b(s, 3, !sigmoid);
    const int N = 7, D = b.c.hidden;
    std::mt19937 gen(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(N * D), y1(N * D), y2(N * D);
    for (float& v : x) v = nd(gen);
    std::vector<int32_t> ids(N, 0);
    MoeActs a;
    moe_acts_init(&a, b.c, N);
    moe_train_forward(y1.data(), &a, b.c, b.w, nullptr, MoeLossSpec(), x.data(), ids.data(), N, N, 0,
                      false);
    FfnScratch fs;
    ffn_scratch_init(&fs, b.c, N);
    moe_forward(y2.data(), b.c, b.w, x.data(), N, &fs, ids.data(), 0, 0);
    for (int i = 0; i < N * D; ++i) EXPECT_NEAR(y1[i], y2[i], 1e-5) << i;
  }
}

// Every router kind: the inference layer computes the training forward of eval mode (no noise,
// dropless), with the same seed and token ids; fixed-K routers leave their (T, K) routing in idx/w.
TEST(MoeTrain, ForwardEqualsInferenceLayerForEveryRouterKind) {
  std::vector<int> first_random;  // random routing's experts of position 0 at N = 7
  for (RouterKind kind : {ROUTER_NOISY_TOPK, ROUTER_EXPERT_CHOICE, ROUTER_HASH, ROUTER_RANDOM}) {
    for (int N : {7, 1}) {
      RouterSpec s;
      s.kind = kind;
      s.scale = 1.25f;
      Block b(s, 3, true);
      const int D = b.c.hidden, K = b.c.top_k;
      std::mt19937 gen(4);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(N * D), y1(N * D), y2(N * D, NAN);
      for (float& v : x) v = nd(gen);
      std::vector<int32_t> ids = {3, 8, 3, 1, 0, 8, 5};
      ids.resize(N);
      MoeActs a;
      moe_acts_init(&a, b.c, N);
      moe_train_forward(y1.data(), &a, b.c, b.w, b.p.data() + b.noise, MoeLossSpec(), x.data(),
                        ids.data(), N, N, 17, false);
      FfnScratch fs;
      ffn_scratch_init(&fs, b.c, N);
      moe_forward(y2.data(), b.c, b.w, x.data(), N, &fs, ids.data(), 0, 17);
      for (int i = 0; i < N * D; ++i)
        EXPECT_NEAR(y1[i], y2[i], 1e-5) << kind << " N " << N << " " << i;
      // Both layers' routing against the rule written from its definition (ref_routing.h):
      // training forward assignments (r) and the inference layer's (T, K) report (fs.idx/w).
      const Routing& r = a.routing;
      const int E = b.c.n_experts;
      const std::vector<double> lg = moe_test::ref_router_logits(b.w.router.w, x.data(), N, E, D);
      std::vector<moe_test::RefChoice> want(N);
      std::vector<std::vector<std::pair<int, double>>> got(N);  // training forward, per token
      for (int q = 0; q < r.A; ++q) got[r.tok[q]].push_back({r.expert[q], r.w[q]});
      if (kind == ROUTER_EXPERT_CHOICE) {
        const auto per_token = moe_test::ref_expert_choice(lg, N, E, K, 0.0, s.scale);
        int A = 0;
        for (int t = 0; t < N; ++t) {
          A += static_cast<int>(per_token[t].size());
          std::sort(got[t].begin(), got[t].end());
          ASSERT_EQ(got[t].size(), per_token[t].size()) << "N " << N << " token " << t;
          for (size_t q = 0; q < got[t].size(); ++q) {
            EXPECT_EQ(got[t][q].first, per_token[t][q].first) << "N " << N << " token " << t;
            EXPECT_NEAR(got[t][q].second, per_token[t][q].second, 1e-6) << "N " << N;
          }
          want[t] = moe_test::ref_top_assignments(per_token[t], K);
        }
        EXPECT_EQ(r.A, A);
        EXPECT_EQ(fs.plan.off[E], A);
        if (N == 1) {
          EXPECT_EQ(A, E);  // every expert takes the one token
        }
      } else if (kind == ROUTER_NOISY_TOPK) {  // eval mode: no noise
        for (int t = 0; t < N; ++t)
          want[t] = moe_test::ref_topk_then_softmax(lg.data() + static_cast<size_t>(t) * E, E, K,
                                                    s.scale);
      } else {
        // Hash and random routing: K distinct experts per token, each weighted scale / K; hash
        // routing gives equal token ids the same experts, and random routing draws per position
        // (so the first token routes alike for N = 7 and N = 1).
        for (int t = 0; t < N; ++t) {
          want[t].expert.assign(fs.idx.begin() + t * K, fs.idx.begin() + (t + 1) * K);
          std::vector<int> e = want[t].expert;
          std::sort(e.begin(), e.end());
          EXPECT_EQ(std::unique(e.begin(), e.end()), e.end()) << kind << " token " << t;
          for (int v : e) EXPECT_TRUE(v >= 0 && v < E) << kind << " token " << t;
          want[t].w.assign(K, static_cast<double>(s.scale) / K);
        }
        if (kind == ROUTER_HASH) {
          for (int t = 0; t < N; ++t)
            for (int u = 0; u < t; ++u)
              if (ids[t] == ids[u]) {
                std::vector<int> a1 = want[t].expert, a2 = want[u].expert;
                std::sort(a1.begin(), a1.end());
                std::sort(a2.begin(), a2.end());
                EXPECT_EQ(a1, a2) << "hash: tokens " << u << " and " << t << " share id " << ids[t];
              }
        }
        if (kind == ROUTER_RANDOM) {
          if (N == 7) {
            first_random = want[0].expert;
          } else {
            EXPECT_EQ(want[0].expert, first_random) << "random: the draw of position 0";
          }
        }
      }
      for (int t = 0; t < N; ++t)
        for (int k = 0; k < K; ++k) {
          EXPECT_EQ(fs.idx[t * K + k], want[t].expert[k]) << kind << " N " << N << " t " << t;
          EXPECT_NEAR(fs.w[t * K + k], want[t].w[k], 1e-6) << kind << " N " << N << " t " << t;
          if (kind == ROUTER_EXPERT_CHOICE) continue;
          EXPECT_EQ(r.expert[t * K + k], want[t].expert[k]) << kind << " N " << N << " t " << t;
          EXPECT_NEAR(r.w[t * K + k], want[t].w[k], 1e-6) << kind << " N " << N << " t " << t;
        }
    }
  }
}

}  // namespace
}  // namespace moe
