// GGUF import: the block types dequantize exactly as ggml does (types.gguf holds ggml's own
// dequantization of each tensor), the dot kernels of every target agree with the reference, the
// tiny models of every architecture reproduce the numpy reference's logits on ggml's dequantized
// weights, and corrupt files are rejected with a one-line error. Fixtures:
// scripts/fixtures/gguf/make_gguf_fixtures.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/forward.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "quant/ggml_types.h"
#include "test_util.h"

using namespace moe;

namespace {

std::string gguf_fixture(const std::string& name) {
  return std::string(MOE_FIXTURE_DIR) + "/gguf/" + name;
}

const char* kTypes[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
                        "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "mxfp4"};

// The error message of f(), or "" if it does not throw.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const MoeError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Gguf, ReadsGgmlWrittenFile) {
  GgufFile g;
  gguf_open(&g, gguf_fixture("types.gguf"));
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.alignment, 32u);
  EXPECT_EQ(g.tensors.size(), 2 * std::size(kTypes));
  const GgufTensor* t = g.tensor("q4_K");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type, QT_Q4_K);
  EXPECT_EQ(t->ne[0], 256);
  EXPECT_EQ(t->ne[1], 2);
  EXPECT_EQ(t->nbytes, 2u * 144u);
}

TEST(Gguf, DequantizationMatchesGgmlExactly) {
  GgufFile g;
  gguf_open(&g, gguf_fixture("types.gguf"));
  for (const char* name : kTypes) {
    const GgufTensor* t = g.tensor(name);
    const GgufTensor* d = g.tensor(std::string(name) + ".deq");
    ASSERT_TRUE(t && d) << name;
    ASSERT_EQ(d->type, QT_F32);
    ASSERT_EQ(t->numel(), d->numel());
    const int64_t n = t->ne[0], rb = qtype_row_bytes(t->type, n);
    std::vector<float> got(static_cast<size_t>(t->numel()));  // (rows, n)
    for (int64_t r = 0; r < t->rows(); ++r)
      dequantize_row(t->type, t->data + r * rb, got.data() + r * n, n);
    EXPECT_EQ(std::memcmp(got.data(), d->data, got.size() * 4), 0) << name;
  }
}

// Every target's GGUF-type dots against the reference (the order of additions may differ) and
// the reference against a float64 dot of the dequantized row.
TEST(Gguf, DotKernelsMatchReference) {
  GgufFile g;
  gguf_open(&g, gguf_fixture("types.gguf"));
  const std::vector<float> x = moe_test::randn(256, 11);
  for (const char* name : kTypes) {
    const GgufTensor* t = g.tensor(name);
    if (!qtype_is_ggml(t->type)) continue;
    const float ref = dot_ggml_f32_ref(t->type, t->data, x.data(), 256);
    std::vector<float> w(256);
    dequantize_row(t->type, t->data, w.data(), 256);
    double exact = 0.0, mag = 0.0;
    for (int i = 0; i < 256; ++i) {
      exact += static_cast<double>(w[i]) * x[i];
      mag += std::fabs(static_cast<double>(w[i]) * x[i]);
    }
    EXPECT_NEAR(ref, exact, 1e-5 * mag) << name;
    for (int tg = 0; tg < QTARGET_COUNT; ++tg) {
      const QKernels* k = qkernels_for(static_cast<QTarget>(tg));
      if (!k) continue;
      const float got = qdot(*k, t->type, t->data, x.data(), nullptr, 256);
      EXPECT_NEAR(got, ref, 1e-5 * mag) << name << " " << k->name;
    }
  }
}

class GgufModelTest : public ::testing::TestWithParam<std::string> {};

namespace {

// Max |logit - golden| and max |golden| of the model loaded with opt.
std::pair<float, float> logits_error(const std::string& arch, const LoadOptions& opt) {
  const auto gold = nlohmann::json::parse(moe_test::slurp(gguf_fixture(arch + ".golden.json")));
  const std::vector<int32_t> ids = gold["ids"].get<std::vector<int32_t>>();
  Model m;
  model_load(&m, gguf_fixture(arch + ".gguf"), opt);
  const int T = static_cast<int>(ids.size()), V = m.cfg.vocab;
  InferState st;
  infer_state_init(&st, m, T, T);
  infer_forward(m, &st, ids.data(), T, true);
  if (gold["logits"].size() != ids.size() || static_cast<int>(gold["logits"][0].size()) != V)
    return {INFINITY, 0.0f};
  float err = 0.0f, mx = 0.0f;
  for (int t = 0; t < T; ++t) {
    for (int v = 0; v < V; ++v) {
      const float want = gold["logits"][t][v].get<float>();
      err = std::max(err, std::fabs(st.logits[static_cast<size_t>(t) * V + v] - want));
      mx = std::max(mx, std::fabs(want));
    }
  }
  return {err, mx};
}

}  // namespace

// Weights dequantized at load: the golden logits (ggml's dequantized weights, float64 reference).
TEST_P(GgufModelTest, DequantizedLogitsMatchReference) {
  LoadOptions opt;
  opt.dequantize = true;
  const auto [err, mx] = logits_error(GetParam(), opt);
  EXPECT_LE(err, 1e-4f * mx) << GetParam() << " max|logit| " << mx;
}

// Weights run raw: Q8_0 / Q4_0 matrices take their activations quantized to Q8_0 (as ggml does),
// which moves the logits by up to about 1% of their range in these tiny models; the other types
// run against fp32 activations, so models without Q8_0 / Q4_0 match as tightly as dequantized.
TEST_P(GgufModelTest, RawLogitsNearReference) {
  const auto gold = nlohmann::json::parse(moe_test::slurp(gguf_fixture(GetParam() + ".golden.json")));
  bool q8x = false;
  for (const auto& kv : gold["types"].items()) q8x |= kv.value() == "q8_0" || kv.value() == "q4_0";
  const auto [err, mx] = logits_error(GetParam(), LoadOptions{});
  EXPECT_LE(err, (q8x ? 2e-2f : 1e-4f) * mx) << GetParam() << " max|logit| " << mx;
  RecordProperty("max_abs_err", std::to_string(err));
}

INSTANTIATE_TEST_SUITE_P(Archs, GgufModelTest,
                         ::testing::Values("qwen3moe", "qwen2moe", "olmoe", "llama", "deepseek2",
                                           "deepseek2_v3", "gpt_oss", "qwen3moe_k"));

// --- corrupt files --------------------------------------------------------------------------

namespace {

std::string bytes_of(const std::string& path) { return moe_test::slurp(path); }

// Writes bytes to a temp file and returns gguf_open's error ("" if it opened).
std::string open_error(const std::string& bytes) {
  static int n = 0;
  const std::string p = moe_test::make_temp_dir("gguf") + "/f" + std::to_string(n++) + ".gguf";
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return error_of([&] {
    GgufFile g;
    gguf_open(&g, p);
  });
}

template <class T>
void put(std::string* s, size_t off, T v) {
  std::memcpy(s->data() + off, &v, sizeof(T));
}

// Offset of the first tensor info (after the key-values) of a file with no key-values.
constexpr size_t kHeader = 24;

// A minimal valid GGUF: no key-values, one F32 tensor "w" of ne = [32, 2] at offset 0.
std::string tiny_file() {
  std::string s(kHeader, '\0');
  std::memcpy(s.data(), "GGUF", 4);
  put<uint32_t>(&s, 4, 3);
  put<uint64_t>(&s, 8, 1);   // tensors
  put<uint64_t>(&s, 16, 0);  // key-values
  auto app = [&](const void* p, size_t n) { s.append(static_cast<const char*>(p), n); };
  const uint64_t len = 1, ne0 = 32, ne1 = 2, off = 0;
  const uint32_t nd = 2, type = 0;
  app(&len, 8);
  s += "w";
  app(&nd, 4);
  app(&ne0, 8);
  app(&ne1, 8);
  app(&type, 4);
  app(&off, 8);
  s.resize((s.size() + 31) / 32 * 32, '\0');
  s.append(32 * 2 * 4, '\0');
  return s;
}

// Offsets of the tensor info fields in tiny_file().
constexpr size_t kNdims = kHeader + 9, kNe0 = kNdims + 4, kType = kNe0 + 16, kOff = kType + 4;

}  // namespace

TEST(GgufCorrupt, TinyFileOpens) { EXPECT_EQ(open_error(tiny_file()), ""); }

TEST(GgufCorrupt, RejectedWithOneLineErrors) {
  struct Case {
    const char* want;
    void (*mutate)(std::string*);
  };
  const Case cases[] = {
      {"bad magic", [](std::string* s) { (*s)[0] = 'X'; }},
      {"version 4", [](std::string* s) { put<uint32_t>(s, 4, 4); }},
      {"tensor count", [](std::string* s) { put<uint64_t>(s, 8, uint64_t{1} << 60); }},
      {"key-value count", [](std::string* s) { put<uint64_t>(s, 16, uint64_t{1} << 60); }},
      {"tensor 'w': n_dims 5", [](std::string* s) { put<uint32_t>(s, kNdims, 5); }},
      {"tensor 'w': ggml type 9", [](std::string* s) { put<uint32_t>(s, kType, 9); }},
      {"tensor 'w': ggml type 1000", [](std::string* s) { put<uint32_t>(s, kType, 1000); }},
      {"tensor 'w': q4_k rows of 32", [](std::string* s) { put<uint32_t>(s, kType, 12); }},
      {"tensor 'w': offset 4 is not a multiple", [](std::string* s) { put<uint64_t>(s, kOff, 4); }},
      {"tensor 'w': bytes [64, 320)", [](std::string* s) { put<uint64_t>(s, kOff, 64); }},
      {"tensor 'w': bytes [0, 512)", [](std::string* s) { put<uint64_t>(s, kNe0, 64); }},
      {"tensor 'w': dimension 0", [](std::string* s) { put<uint64_t>(s, kNe0, ~uint64_t{0}); }},
      {"truncated", [](std::string* s) { s->resize(kHeader + 30); }},
      {"tensor 'w': bytes", [](std::string* s) { s->resize(s->size() - 1); }},
  };
  for (const Case& c : cases) {
    std::string s = tiny_file();
    c.mutate(&s);
    const std::string err = open_error(s);
    EXPECT_NE(err.find(c.want), std::string::npos) << "want '" << c.want << "', got: " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    EXPECT_NE(err.find(".gguf"), std::string::npos) << err;
  }
}

// Every prefix of a real file and every single-byte corruption of its header and tensor infos is
// rejected or read without crashing (the sanitizer builds catch out-of-range reads).
TEST(GgufCorrupt, TruncationsAndByteFlipsNeverCrash) {
  const std::string good = bytes_of(gguf_fixture("types.gguf"));
  ASSERT_GT(good.size(), 2048u);
  for (size_t n = 0; n < good.size(); n += good.size() < 4096 ? 1 : 97)
    EXPECT_NE(open_error(good.substr(0, n)), "") << n;
  for (size_t i = 0; i < 1500; i += 7) {
    std::string s = good;
    s[i] = static_cast<char>(s[i] ^ 0xff);
    (void)open_error(s);
  }
}

TEST(GgufCorrupt, KeyValueChecks) {
  // general.alignment = 3 (u32).
  std::string s = tiny_file();
  put<uint64_t>(&s, 16, 1);
  std::string kv;
  const uint64_t klen = 17;
  const uint32_t type = GGUF_U32, val = 3;
  kv.append(reinterpret_cast<const char*>(&klen), 8);
  kv += "general.alignment";
  kv.append(reinterpret_cast<const char*>(&type), 4);
  kv.append(reinterpret_cast<const char*>(&val), 4);
  s.insert(kHeader, kv);
  std::string err = open_error(s);
  EXPECT_NE(err.find("key 'general.alignment' is 3"), std::string::npos) << err;
  // An array of 2^60 u32 elements.
  std::string a = tiny_file();
  put<uint64_t>(&a, 16, 1);
  std::string kv2;
  const uint64_t k2 = 1, n = uint64_t{1} << 60;
  const uint32_t at = GGUF_ARRAY, et = GGUF_U32;
  kv2.append(reinterpret_cast<const char*>(&k2), 8);
  kv2 += "x";
  kv2.append(reinterpret_cast<const char*>(&at), 4);
  kv2.append(reinterpret_cast<const char*>(&et), 4);
  kv2.append(reinterpret_cast<const char*>(&n), 8);
  a.insert(kHeader, kv2);
  err = open_error(a);
  EXPECT_NE(err.find("key 'x': array length"), std::string::npos) << err;
}

TEST(GgufCorrupt, UnknownArchitectureNamed) {
  // types.gguf has no general.architecture; a model load names the missing key.
  Model m;
  const std::string err = error_of([&] { model_load(&m, gguf_fixture("types.gguf")); });
  EXPECT_NE(err.find("key 'general.architecture' is missing"), std::string::npos) << err;
}

// A split model (NAME-00001-of-00002.gguf + NAME-00002-of-00002.gguf) reads as one file: the
// tensors of both, the key-values of the first; a missing part or a wrong split.count is named.
TEST(GgufSplit, OpensEveryPart) {
  const std::string dir = moe_test::make_temp_dir("gguf_split");
  std::vector<float> a(64, 1.0f), b(32, 2.0f);  // (2, 32), (1, 32)
  GgufValue count;
  count.type = GGUF_U16;
  count.i = 2;
  GgufValue arch;
  arch.type = GGUF_STRING;
  arch.s = "x";
  gguf_write(dir + "/m-00001-of-00002.gguf", {{"general.architecture", arch}, {"split.count", count}},
             {{"a", QT_F32, {32, 2}, a.data()}});
  const std::string err_missing = error_of([&] {
    GgufFile g;
    gguf_open(&g, dir + "/m-00001-of-00002.gguf");
  });
  EXPECT_NE(err_missing.find("m-00002-of-00002.gguf"), std::string::npos) << err_missing;
  gguf_write(dir + "/m-00002-of-00002.gguf", {{"split.count", count}},
             {{"b", QT_F32, {32, 1}, b.data()}});
  GgufFile g;
  gguf_open(&g, dir + "/m-00001-of-00002.gguf");
  EXPECT_EQ(g.files.size(), 2u);
  ASSERT_TRUE(g.tensor("a") && g.tensor("b"));
  float v;
  std::memcpy(&v, g.tensor("b")->data, 4);
  EXPECT_EQ(v, 2.0f);
  EXPECT_EQ(g.get_str("general.architecture"), "x");
  count.i = 3;
  gguf_write(dir + "/m-00001-of-00002.gguf", {{"split.count", count}}, {});
  const std::string err = error_of([&] {
    GgufFile h;
    gguf_open(&h, dir + "/m-00001-of-00002.gguf");
  });
  EXPECT_NE(err.find("key 'split.count' is 3"), std::string::npos) << err;
}

// A model file whose metadata is changed: each change is a one-line error naming the key.
TEST(GgufCorrupt, ModelMetadataChecks) {
  GgufFile g;
  gguf_open(&g, gguf_fixture("qwen3moe.gguf"));
  std::vector<GgufWriteTensor> tensors;
  for (const std::string& n : g.order) {
    const GgufTensor& t = g.tensors.at(n);
    tensors.push_back({n, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data});
  }
  const std::string dir = moe_test::make_temp_dir("gguf_meta");
  struct Case {
    const char* key;
    GgufType type;
    int64_t i;
    const char* s;
    const char* want;
  };
  const Case cases[] = {
      {"qwen3moe.expert_count", GGUF_U32, 1000000000, "", "key 'qwen3moe.expert_count' is 1000000000"},
      {"qwen3moe.block_count", GGUF_U32, 1 << 30, "", "key 'qwen3moe.block_count' is 1073741824"},
      {"qwen3moe.embedding_length", GGUF_U32, 96, "", "does not match"},
      {"qwen3moe.attention.head_count", GGUF_STRING, 0, "four", "key 'qwen3moe.attention.head_count' is string"},
      {"general.architecture", GGUF_STRING, 0, "bert", "'general.architecture' is 'bert'"},
  };
  for (const Case& c : cases) {
    std::vector<std::pair<std::string, GgufValue>> kv;
    for (const auto& e : g.kv) {
      GgufValue v = e.second;
      if (e.first == c.key) {
        v = GgufValue();
        v.type = c.type;
        v.i = c.i;
        v.s = c.s;
      }
      kv.emplace_back(e.first, v);
    }
    const std::string path = dir + "/m.gguf";
    gguf_write(path, kv, tensors);
    Model m;
    const std::string err = error_of([&] { model_load(&m, path); });
    EXPECT_NE(err.find(c.want), std::string::npos) << c.key << ": " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
}
