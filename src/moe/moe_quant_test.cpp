// The sparse MoE layer with raw experts (BF16 / Q8_0 / Q4_0, and mixtures with fp32), against a
// double-precision reference on the dequantized weights: with the Q8_0 activation rounding of the
// dot path emulated (tight), and without it for the dequantize + sgemm path. Also thread-count
// independence.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "moe/moe_layer.h"
#include "ops/ops.h"
#include "quant/quant.h"

namespace moe {
namespace {

// One expert matrix stored in `type`, with its dequantized fp32 values for the reference.
struct StoredMat {
  QType type = QT_F32;
  std::vector<uint8_t> raw;  // (rows, row bytes)
  std::vector<float> deq;    // (rows, cols)
};

StoredMat store(QType t, const std::vector<float>& w, int rows, int cols) {
  StoredMat m;
  m.type = t;
  m.deq = w;
  if (t == QT_F32) return m;
  const int64_t rb = qtype_row_bytes(t, cols);
  m.raw.resize(rows * rb);
  for (int r = 0; r < rows; ++r) {
    quantize_row(t, w.data() + r * cols, m.raw.data() + r * rb, cols);
    dequantize_row(t, m.raw.data() + r * rb, m.deq.data() + r * cols, cols);
  }
  return m;
}

void bind(const StoredMat& m, int cols, const float** f, QWeight* q) {
  if (m.type == QT_F32)
    *f = m.deq.data();
  else
    *q = QWeight{m.type, m.raw.data(), qtype_row_bytes(m.type, cols)};
}

struct QuantMoe {
  ModelConfig c;
  LayerWeights lw;
  std::vector<float> router;               // (E, D)
  std::vector<StoredMat> gate, up, down;   // [E]
  std::vector<std::vector<float>> biases;  // gate_b, up_b, down_b per expert

  // types[e] = {gate, up, down} storage of expert e.
  QuantMoe(const std::vector<std::array<QType, 3>>& types, ExpertAct act) {
    std::mt19937 g(7);
    std::normal_distribution<float> d(0.0f, 0.2f);
    c.hidden = 64;
    c.expert_ffn = 96;
    c.n_experts = static_cast<int>(types.size());
    c.top_k = 2;
    c.router.norm_topk = true;
    c.act = act;
    c.expert_bias = act == ACT_SWIGLU_OAI;
    const int D = c.hidden, F = c.expert_ffn, E = c.n_experts;
    auto rnd = [&](int n) {
      std::vector<float> v(n);
      for (float& x : v) x = d(g);
      return v;
    };
    router = rnd(E * D);
    lw.router = {router.data(), nullptr, E, D};
    lw.experts.resize(E);
    for (int e = 0; e < E; ++e) {
      gate.push_back(store(types[e][0], rnd(F * D), F, D));
      up.push_back(store(types[e][1], rnd(F * D), F, D));
      down.push_back(store(types[e][2], rnd(D * F), D, F));
      if (c.expert_bias) {
        biases.push_back(rnd(F));
        biases.push_back(rnd(F));
        biases.push_back(rnd(D));
      }
    }
    for (int e = 0; e < E; ++e) {
      ExpertWeights& x = lw.experts[e];
      bind(gate[e], D, &x.gate, &x.gate_q);
      bind(up[e], D, &x.up, &x.up_q);
      bind(down[e], F, &x.down, &x.down_q);
      if (c.expert_bias) {
        x.gate_b = biases[3 * e].data();
        x.up_b = biases[3 * e + 1].data();
        x.down_b = biases[3 * e + 2].data();
      }
    }
  }
};

double act_ref(const ModelConfig& c, double g, double u) {
  if (c.act == ACT_SWIGLU) return g / (1 + std::exp(-g)) * u;
  g = std::min(g, 7.0);
  u = std::clamp(u, -7.0, 7.0);
  return (u + 1) * g / (1 + std::exp(-1.702 * g));
}

// x rounded through Q8_0 (what the dot path feeds a block-quantized matrix), else unchanged.
std::vector<float> act_rounding(const std::vector<float>& x, QType w, bool emulate) {
  if (!emulate || !qtype_is_block(w)) return x;
  const int n = static_cast<int>(x.size());
  std::vector<uint8_t> q(qtype_row_bytes(QT_Q8_0, n));
  std::vector<float> out(n);
  quantize_row_q8_0(x.data(), q.data(), n);
  dequantize_row_q8_0(q.data(), out.data(), n);
  return out;
}

// Reference output (T, D) in double on the dequantized weights; `emulate` applies the dot path's
// Q8_0 rounding of the inputs of block-quantized matrices.
std::vector<double> reference(const QuantMoe& m, const std::vector<float>& x, int T, bool emulate) {
  const ModelConfig& c = m.c;
  const int D = c.hidden, F = c.expert_ffn, E = c.n_experts, K = c.top_k;
  std::vector<float> logits(T * E);
  op_linear(logits.data(), x.data(), m.router.data(), nullptr, T, E, D);
  Routing rt;
  routing_init(&rt, T, E, K);
  router_forward(&rt, c.router, logits.data(), nullptr, nullptr, nullptr, T, 0.0f, 0, false);
  const std::vector<int32_t> idx(rt.expert.begin(), rt.expert.begin() + T * K);
  const std::vector<float> w(rt.w.begin(), rt.w.begin() + T * K);
  std::vector<double> out(T * D, 0.0);
  for (int t = 0; t < T; ++t) {
    const std::vector<float> xt(x.begin() + t * D, x.begin() + (t + 1) * D);
    for (int k = 0; k < K; ++k) {
      const int e = idx[t * K + k];
      const std::vector<float> xg = act_rounding(xt, m.gate[e].type, emulate);
      const std::vector<float> xu = act_rounding(xt, m.up[e].type, emulate);
      std::vector<float> h(F);
      for (int f = 0; f < F; ++f) {
        double g = c.expert_bias ? m.biases[3 * e][f] : 0.0;
        double u = c.expert_bias ? m.biases[3 * e + 1][f] : 0.0;
        for (int i = 0; i < D; ++i) {
          g += static_cast<double>(m.gate[e].deq[f * D + i]) * xg[i];
          u += static_cast<double>(m.up[e].deq[f * D + i]) * xu[i];
        }
        h[f] = static_cast<float>(act_ref(c, g, u));
      }
      const std::vector<float> hd = act_rounding(h, m.down[e].type, emulate);
      for (int i = 0; i < D; ++i) {
        double y = c.expert_bias ? m.biases[3 * e + 2][i] : 0.0;
        for (int f = 0; f < F; ++f) y += static_cast<double>(m.down[e].deq[i * F + f]) * hd[f];
        out[t * D + i] += w[t * K + k] * y;
      }
    }
  }
  return out;
}

std::vector<float> forward(const QuantMoe& m, const std::vector<float>& x, int T, int dot_max) {
  FfnScratch s;
  ffn_scratch_init(&s, m.c, T);
  ffn_set_dot_max_tokens(&s, dot_max);
  std::vector<float> out(T * m.c.hidden);
  moe_forward(out.data(), m.c, m.lw, x.data(), T, &s, nullptr, 0, 0);
  return out;
}

double max_rel(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

struct Variant {
  const char* name;
  std::vector<std::array<QType, 3>> types;
  ExpertAct act;
};

std::vector<Variant> variants() {
  const QType F = QT_F32, B = QT_BF16, Q8 = QT_Q8_0, Q4 = QT_Q4_0;
  return {
      {"q8_0", std::vector<std::array<QType, 3>>(6, {Q8, Q8, Q8}), ACT_SWIGLU},
      {"q4_0", std::vector<std::array<QType, 3>>(6, {Q4, Q4, Q4}), ACT_SWIGLU},
      {"bf16", std::vector<std::array<QType, 3>>(6, {B, B, B}), ACT_SWIGLU},
      {"q4_0 gpt-oss act + biases", std::vector<std::array<QType, 3>>(6, {Q4, Q4, Q8}),
       ACT_SWIGLU_OAI},
      // Mixed storage within and across experts, one expert all fp32.
      {"mixed",
       {{Q4, Q8, B}, {Q8, Q8, F}, {F, F, F}, {B, Q4, Q4}, {Q8, F, Q4}, {Q4, Q4, B}},
       ACT_SWIGLU},
  };
}

TEST(MoeQuant, RawExpertsMatchReference) {
  const int T = 7;  // 14 assignments over 6 experts: every segment is short (dot path)
  for (const Variant& su : variants()) {
    SCOPED_TRACE(su.name);
    QuantMoe m(su.types, su.act);
    std::mt19937 g(3);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> x(T * m.c.hidden);
    for (float& v : x) v = d(g);
    // Dot path vs the reference with the same activation rounding: only fp32 summation order.
    const double e_dot = max_rel(forward(m, x, T, 16), reference(m, x, T, true));
    EXPECT_LE(e_dot, 2e-6);
    // Dequantize + sgemm path vs the plain reference on the dequantized weights.
    const double e_gemm = max_rel(forward(m, x, T, 0), reference(m, x, T, false));
    EXPECT_LE(e_gemm, 2e-6);
    // What the activation rounding itself costs at this layer (Q8_0 steps of amax / 127).
    const double e_round = max_rel(forward(m, x, T, 16), reference(m, x, T, false));
    const double round_tol = su.types[0][0] == QT_BF16 ? 2e-6 : 4e-2;  // measured up to 1.9e-2
    EXPECT_LE(e_round, round_tol);
    std::printf("[ moe quant ] %-26s dot vs emulated %.1e, gemm %.1e, activation rounding %.1e\n",
                su.name, e_dot, e_gemm, e_round);
  }
}

TEST(MoeQuant, ResultsDoNotDependOnThreads) {
  const int T = 40;  // long and short segments
  for (const Variant& su : variants()) {
    QuantMoe m(su.types, su.act);
    std::mt19937 g(5);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> x(T * m.c.hidden);
    for (float& v : x) v = d(g);
    const int threads = omp_get_max_threads();
    std::vector<std::vector<float>> outs;
    for (int n : {1, 2, 5}) {
      omp_set_num_threads(n);
      for (int dot_max : {0, 8, 1000}) outs.push_back(forward(m, x, T, dot_max));
    }
    omp_set_num_threads(threads);
    for (size_t i = 3; i < outs.size(); ++i) EXPECT_EQ(outs[i], outs[i % 3]) << su.name << " " << i;
  }
}

}  // namespace
}  // namespace moe
