// Quantized checkpoints end to end: every fixture quantized (bf16 / q8_0 / q4_0, experts only and
// all matrices) and run with raw experts, against (a) the same checkpoint with its weights
// dequantized to fp32 at load, through both expert paths, and (b) the fixture's golden logits.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "infer/forward.h"
#include "model/checkpoint_write.h"
#include "golden_util.h"
#include "test_util.h"

namespace moe {
namespace {

using moe_test::Golden;
using moe_test::load_golden;

// Logits (T, V) of the whole prompt; dot_max sets FfnScratch's dot thresholds and the
// LinearScratch::dot_max_tokens of raw attention / MLP matrices (-1: default).
std::vector<float> run(const Model& m, const std::vector<int32_t>& ids, int dot_max = -1) {
  const int T = static_cast<int>(ids.size());
  InferState st;
  infer_state_init(&st, m, T, T);
  if (dot_max >= 0) {
    ffn_set_dot_max_tokens(&st.ffn, dot_max);
    st.ffn.lin.dot_max_tokens = std::min(st.ffn.lin.dot_max_tokens, dot_max);
    st.lin.dot_max_tokens = std::min(st.lin.dot_max_tokens, dot_max);
  }
  infer_forward(m, &st, ids.data(), T, true);
  return std::vector<float>(st.logits.begin(),
                            st.logits.begin() + static_cast<int64_t>(T) * m.cfg.vocab);
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

float mean_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m += std::fabs(a[i] - b[i]);
  return static_cast<float>(m / a.size());
}

int count_raw(const Model& m) {
  int n = 0;
  for (const LayerWeights& lw : m.layers)
    for (const ExpertWeights& e : lw.experts)
      n += (e.gate_q.type != QT_F32) + (e.up_q.type != QT_F32) + (e.down_q.type != QT_F32);
  return n;
}

struct Case {
  QType type;
  bool experts_only;
  // Bound on mean |logit - golden| / max |golden logit|. The weight rounding of the type
  // (relative rms error ~2^-9 for bf16, ~0.5% for q8_0, ~9% for q4_0) carried through three
  // layers of random weights, plus discrete jumps where a perturbed router picks another expert
  // (these tiny random models have many near-ties; one flipped choice can move a logit by 30-90%
  // of max |logit|, so the maximum is no useful measure and the mean is bounded instead).
  // Measured worst means over the fixtures: bf16 0.0016, q8_0 0.029 (with a flip), q4_0 0.125.
  float golden_mean_tol;
};

const Case kCases[] = {
    {QT_BF16, true, 0.005f}, {QT_BF16, false, 0.005f}, {QT_Q8_0, true, 0.05f},
    {QT_Q8_0, false, 0.05f}, {QT_Q4_0, true, 0.2f},    {QT_Q4_0, false, 0.2f},
};

class QuantModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantModelTest, QuantizedMatchesDequantizedAndGolden) {
  const std::string fixture = moe_test::fixture_path(GetParam());
  const Golden g = load_golden(fixture);
  const std::string root = moe_test::make_temp_dir("qmodel");
  for (const Case& c : kCases) {
    const std::string dir =
        root + "/" + qtype_name(c.type) + (c.experts_only ? "_experts" : "_all");
    SCOPED_TRACE(dir);
    CkptWriteStats stats;
    ckpt_quantize(fixture, dir, c.type, c.experts_only, &stats);
    EXPECT_LE(stats.bytes_out, stats.bytes_in);  // equal for bf16 from a bf16 checkpoint
    Model q, d;
    model_load(&q, dir);
    LoadOptions lo;
    lo.dequantize = true;
    model_load(&d, dir, lo);
    // gpt-oss's bf16 experts are rearranged into fp32 at load; every other case keeps them raw.
    if (c.type != QT_BF16 || q.cfg.arch != ARCH_GPT_OSS) {
      EXPECT_GT(count_raw(q), 0);
    }
    EXPECT_EQ(count_raw(d), 0);
    const std::vector<float> ref = run(d, g.ids);  // fp32 on the dequantized weights
    // Long-segment path (dequantize rows + sgemm): the same products in fp32, so only the
    // summation order may differ (measured: identical).
    const float e_gemm = max_diff(run(q, g.ids, 0), ref);
    EXPECT_LE(e_gemm, 1e-5f * g.max_abs);
    // Dot path (every segment here is short). bf16 keeps fp32 activations: only summation order.
    // Q8_0 / Q4_0 quantize the activations to Q8_0, each moving by at most half a step of its
    // block's amax / 127 (~0.6% rms of a Gaussian row): measured mean 0.26% and max 1.7% of max
    // |logit|, except where the perturbation flips a near-tied routing choice (max up to 8%). The
    // tight check of this path, with the activation rounding emulated, is MoeQuant in
    // src/moe/moe_quant_test.cpp; QuantModel.AllExpertsActive bounds it where no routing can flip.
    // With every matrix quantized (not experts_only), the inputs of the attention projections
    // are rounded to Q8_0 too, which moves the attention scores and flips many more near-tied
    // routing choices downstream (measured means up to 12% of max |logit| on gpt_oss_base q8_0):
    // those cases are bounded against the golden logits below, by QuantModel.AllExpertsActive
    // end to end where nothing can flip, and by LinearForward (src/ops/linear_test.cpp) per
    // matrix with the rounding emulated.
    const std::vector<float> qd = run(q, g.ids);
    const float e_dot = max_diff(qd, ref), m_dot = mean_diff(qd, ref);
    if (c.type == QT_BF16) {
      EXPECT_LE(e_dot, 1e-5f * g.max_abs);
    } else if (c.experts_only) {
      EXPECT_LE(m_dot, 5e-3f * g.max_abs);
      EXPECT_LE(e_dot, 0.15f * g.max_abs);
    }
    const float e_gold = max_diff(qd, g.logits), m_gold = mean_diff(qd, g.logits);
    EXPECT_LE(m_gold, c.golden_mean_tol * g.max_abs);
    std::printf(
        "[ quant    ] %-28s %-4s %-7s %6.1f -> %6.1f KiB  vs fp32-dequant: gemm %.1e dot max "
        "%.1e mean %.1e  vs golden: max %.4f mean %.4f\n",
        GetParam().c_str(), qtype_name(c.type), c.experts_only ? "experts" : "all",
        stats.bytes_in / 1024.0, stats.bytes_out / 1024.0, e_gemm / g.max_abs, e_dot / g.max_abs,
        m_dot / g.max_abs, e_gold / g.max_abs, m_gold / g.max_abs);
  }
  std::filesystem::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantModelTest, ::testing::ValuesIn(moe_test::fixture_names()),
                         [](const auto& info) { return info.param; });

// Decode through the cache (one token at a time, dot path) equals the full forward, and results
// do not depend on the thread count.
TEST(QuantModel, IncrementalDecodeAndThreadsAgree) {
  for (const std::string name : {"qwen3_moe_qknorm", "gpt_oss_base", "deepseek_v2_lite"}) {
    const std::string fixture = moe_test::fixture_path(name);
    const Golden g = load_golden(fixture);
    const std::string dir = moe_test::make_temp_dir("qdecode") + "/q";
    CkptWriteStats stats;
    ckpt_quantize(fixture, dir, QT_Q4_0, false, &stats);
    Model m;
    model_load(&m, dir);
    const std::vector<float> full = run(m, g.ids);
    const int T = static_cast<int>(g.ids.size()), V = m.cfg.vocab;
    InferState st;
    infer_state_init(&st, m, T, T);
    for (int t = 0; t < T; ++t) {
      infer_forward(m, &st, &g.ids[t], 1, false);
      for (int i = 0; i < V; ++i)
        ASSERT_NEAR(st.logits[i], full[static_cast<int64_t>(t) * V + i], 1e-5f * g.max_abs)
            << name << " t=" << t;
    }
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const std::vector<float> one = run(m, g.ids), one_gemm = run(m, g.ids, 0);
    omp_set_num_threads(3);
    const std::vector<float> three = run(m, g.ids), three_gemm = run(m, g.ids, 0);
    omp_set_num_threads(threads);
    EXPECT_EQ(one, three) << name;
    EXPECT_EQ(one, full) << name;
    EXPECT_EQ(one_gemm, three_gemm) << name;
    std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
  }
}

// With top_k == n_experts every token uses every expert, so no routing choice can flip and the
// dot path differs from fp32 on the dequantized weights only through the Q8_0 rounding of the
// inputs of the quantized matrices (about 0.6% rms relative per activation), here measured end
// to end: experts only, and every matrix (attention projections too).
TEST(QuantModel, AllExpertsActiveBoundsActivationRounding) {
  const std::string root = moe_test::make_temp_dir("qdense");
  const std::string cfg = root + "/config.json";
  FILE* f = std::fopen(cfg.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(R"({"model_type": "qwen3_moe", "vocab_size": 128, "hidden_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
    "intermediate_size": 256, "moe_intermediate_size": 64, "num_experts": 4,
    "num_experts_per_tok": 4, "norm_topk_prob": true, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 64, "eos_token_id": 2})",
             f);
  std::fclose(f);
  std::vector<int32_t> ids;
  for (int i = 0; i < 12; ++i) ids.push_back((i * 37 + 5) % 128);
  InitOptions opt;
  opt.seed = 11;
  CkptWriteStats stats;
  ckpt_init_random(cfg, root + "/f32", opt, &stats);
  for (QType t : {QT_Q8_0, QT_Q4_0})
  for (bool experts_only : {true, false}) {
    const std::string dir = root + "/" + qtype_name(t) + (experts_only ? "_experts" : "_all");
    ckpt_quantize(root + "/f32", dir, t, experts_only, &stats);
    Model q, d;
    model_load(&q, dir);
    LoadOptions lo;
    lo.dequantize = true;
    model_load(&d, dir, lo);
    const std::vector<float> ref = run(d, ids), got = run(q, ids);
    float scale = 0.0f;
    for (float v : ref) scale = std::max(scale, std::fabs(v));
    const float e = max_diff(got, ref) / scale;
    std::printf("[ quant    ] all experts active, %s %s: dot path vs fp32-dequant max %.2e\n",
                qtype_name(t), experts_only ? "experts" : "all", e);
    // Measured: experts only 7e-4 (q8_0) and 8e-4 (q4_0); all matrices 9.4e-3 and 1.3e-2 (the
    // rounded q / k inputs move the attention scores of these random weights).
    EXPECT_LE(e, experts_only ? 5e-3f : 3e-2f);
    EXPECT_LE(max_diff(run(q, ids, 0), ref), 1e-5f * scale);
  }
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace moe
