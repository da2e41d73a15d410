// Streamed safetensors writing, the storage policy of `moe quantize` / `moe init`, random init
// determinism, the quantized-checkpoint metadata checks of the loader, and gpt-oss's transposed
// expert storage.
#include "model/checkpoint_write.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

using moe_test::slurp;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const MoeError& e) {
    return e.what();
  }
  return "";
}

TEST(StStream, SameBytesAsStWriteInAnyChunking) {
  const std::string dir = moe_test::make_temp_dir("ststream");
  std::vector<float> a(5 * 7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f;
  std::vector<uint8_t> b = {1, 2, 3};
  uint16_t c = 0x3f80;
  std::vector<float> empty;
  std::vector<StWriteTensor> ts = {{"a", DT_F32, {5, 7}, a.data()},
                                   {"b", DT_U8, {3}, b.data()},
                                   {"c", DT_BF16, {}, &c},
                                   {"z", DT_F32, {0, 4}, nullptr}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"k", "v"}};
  st_write(dir + "/ref.safetensors", ts, meta);
  std::vector<StStreamTensor> ss;
  for (const auto& t : ts) ss.push_back({t.name, t.dtype, t.shape});
  for (size_t chunk : {size_t{1}, size_t{30}, size_t{64} << 20}) {
    std::vector<std::pair<size_t, int64_t>> calls;
    st_write_stream(
        dir + "/s.safetensors", ss, meta,
        [&](size_t i, int64_t r0, int64_t n, uint8_t* dst) {
          calls.push_back({i, n});
          const size_t row = ts[i].shape.empty() ? dtype_size(ts[i].dtype)
                                                 : ts[i].shape.back() * dtype_size(ts[i].dtype);
          std::memcpy(dst, static_cast<const uint8_t*>(ts[i].data) + r0 * row, n * row);
        },
        chunk);
    EXPECT_EQ(slurp(dir + "/s.safetensors"), slurp(dir + "/ref.safetensors")) << chunk;
    if (chunk == 30) {
      EXPECT_EQ(calls.size(), 5u + 1u + 1u);  // 28-byte rows: one per call
    }
  }
  fs::remove_all(dir);
}

TEST(StStream, FailureLeavesNoFile) {
  const std::string dir = moe_test::make_temp_dir("ststream_fail");
  const std::string p = dir + "/x.safetensors";
  std::string e = error_of([&] {
    st_write_stream(p, {{"a", DT_F32, {4, 4}}, {"b", DT_F32, {2}}}, {},
                    [&](size_t i, int64_t, int64_t n, uint8_t* dst) {
                      if (i == 1) fail("fill failed");
                      std::memset(dst, 0, n * 16);
                    });
  });
  EXPECT_EQ(e, "fill failed");
  EXPECT_TRUE(fs::is_empty(dir));
  e = error_of([&] { st_write_stream(p, {{"a", DT_F32, {-1}}}, {}, nullptr); });
  EXPECT_NE(e.find("negative"), std::string::npos) << e;
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

TEST(CkptWrite, StoragePolicyAndRoles) {
  ModelConfig c;
  config_load(&c, moe_test::fixture_path("qwen3_moe_yarn_fused_f16"));  // expert F = 24
  for (const TensorSpec& s : model_tensor_specs(c, true)) {
    const bool expert = s.name.find("mlp.experts.") != std::string::npos;
    const bool linear =
        s.name.find("self_attn.") != std::string::npos && s.name.find("norm") == std::string::npos;
    const bool output = s.name == "lm_head.weight";  // untied in this fixture
    EXPECT_EQ(s.role, expert ? TR_EXPERT : linear ? TR_LINEAR : output ? TR_OUTPUT : TR_OTHER)
        << s.name;
    EXPECT_FALSE(s.in_major);
    const bool down = s.name.find("down_proj") != std::string::npos;
    // q4_0 needs input axes in whole blocks: the experts' down_proj (F = 24 inputs) stays; the
    // lm_head is stored as q8_0.
    EXPECT_EQ(ckpt_tensor_type(s, QT_Q4_0, false),
              s.role == TR_OTHER || (expert && down) ? QT_F32 : output ? QT_Q8_0 : QT_Q4_0)
        << s.name;
    EXPECT_EQ(ckpt_tensor_type(s, QT_Q8_0, false),
              s.role == TR_OTHER || (expert && down) ? QT_F32 : QT_Q8_0)
        << s.name;
    EXPECT_EQ(ckpt_tensor_type(s, QT_BF16, true), expert ? QT_BF16 : QT_F32) << s.name;
  }
  config_load(&c, moe_test::fixture_path("gpt_oss_base"));
  int in_major = 0;
  for (const TensorSpec& s : model_tensor_specs(c, true)) {
    in_major += s.in_major;
    if (s.in_major) {
      EXPECT_EQ(s.role, TR_EXPERT);
    }
    if (s.name.find("router") != std::string::npos) {
      EXPECT_EQ(s.role, TR_OTHER);
    }
  }
  EXPECT_EQ(in_major, 2 * c.n_layers);
}

TEST(CkptWrite, InitIsDeterministicAndDistributedAsDocumented) {
  const std::string root = moe_test::make_temp_dir("init");
  const std::string cfg = moe_test::fixture_path("qwen2_moe_shared") + "/config.json";
  InitOptions o;
  o.seed = 5;
  CkptWriteStats st;
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  ckpt_init_random(cfg, root + "/a", o, &st);
  omp_set_num_threads(3);
  ckpt_init_random(cfg, root + "/b", o, &st);
  omp_set_num_threads(threads);
  o.seed = 6;
  ckpt_init_random(cfg, root + "/c", o, &st);
  const std::string a = slurp(root + "/a/model.safetensors");
  EXPECT_EQ(a, slurp(root + "/b/model.safetensors"));
  EXPECT_NE(a, slurp(root + "/c/model.safetensors"));
  EXPECT_EQ(slurp(root + "/a/config.json"), slurp(cfg));
  EXPECT_TRUE(fs::exists(root + "/a/generation_config.json"));
  Model m;
  model_load(&m, root + "/a");  // loads and validates like any checkpoint
  const StTensor& w = m.archive.get("model.layers.0.mlp.experts.3.up_proj.weight");
  std::vector<float> v(w.numel());
  dtype_to_f32(w.dtype, w.data, v.data(), v.size());
  double sum = 0, sq = 0, amax = 0;
  for (float x : v) {
    sum += x;
    sq += static_cast<double>(x) * x;
    amax = std::max(amax, static_cast<double>(std::fabs(x)));
  }
  EXPECT_NEAR(sum / v.size(), 0.0, 0.002);
  EXPECT_NEAR(std::sqrt(sq / v.size()), 0.02, 0.002);
  EXPECT_LE(amax, 0.02 * 3.47);
  EXPECT_EQ(m.layers[1].attn_norm[7], 1.0f);
  // The same seed in q4_0 gives the q4_0 rounding of the same values.
  o.seed = 5;
  o.type = QT_Q4_0;
  ckpt_init_random(cfg, root + "/q", o, &st);
  Model q;
  LoadOptions lo;
  lo.dequantize = true;
  model_load(&q, root + "/q", lo);
  const ExpertWeights& e = q.layers[0].experts[3];
  for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(e.up[i], v[i], 0.02 * 3.47 / 8 * 1.01) << i;
  EXPECT_EQ(q.n_params, m.n_params);
  fs::remove_all(root);
}

// Rewrites dir/model.safetensors with tensors and metadata changed by `edit`.
void rewrite(const std::string& dir,
             const std::function<void(std::vector<StWriteTensor>*,
                                      std::map<std::string, std::string>*)>& edit) {
  StArchive ar;
  st_open_file(&ar, dir + "/model.safetensors");
  std::vector<StWriteTensor> ts;
  for (const auto& [name, t] : ar.tensors) ts.push_back({name, t.dtype, t.shape, t.data});
  std::map<std::string, std::string> meta = ar.metadata;
  edit(&ts, &meta);
  st_write(dir + "/model.safetensors.new", ts, meta);
  fs::rename(dir + "/model.safetensors.new", dir + "/model.safetensors");
}

TEST(CkptWrite, LoaderChecksQuantMetadata) {
  const std::string root = moe_test::make_temp_dir("qmeta");
  const std::string fixture = moe_test::fixture_path("olmoe_base");
  CkptWriteStats st;
  ckpt_quantize(fixture, root + "/q", QT_Q4_0, true, &st);
  const std::string up = "model.layers.1.mlp.experts.2.up_proj.weight";  // [32, 64]
  const std::string key = "moe.quant." + up;
  struct Bad {
    const char* what;
    std::function<void(std::vector<StWriteTensor>*, std::map<std::string, std::string>*)> edit;
  };
  std::vector<float> f32(32 * 64, 0.0f);
  const Bad bad[] = {
      {"no 'moe.format_version'", [](auto*, auto* m) { m->erase("moe.format_version"); }},
      {"this build reads version 1", [](auto*, auto* m) { (*m)["moe.format_version"] = "2"; }},
      {"expected '<q8_0|q4_0>", [&](auto*, auto* m) { (*m)[key] = "q4_0:32;64"; }},
      {"expected '<q8_0|q4_0>", [&](auto*, auto* m) { (*m)[key] = "q5_0:32,64"; }},
      {"does not match config.json", [&](auto*, auto* m) { (*m)[key] = "q4_0:64,32"; }},
      {"stored shape [32, 36] does not match q8_0",
       [&](auto*, auto* m) { (*m)[key] = "q8_0:32,64"; }},
      {"only supported for gpt-oss", [&](auto*, auto* m) { (*m)[key] = "q4_0:32,64:t"; }},
      {"names no tensor of this file", [](auto*, auto* m) { (*m)["moe.quant.nope"] = "q4_0:32"; }},
      {"dtype U8 is not a float type (F32, BF16, F16, F64) and __metadata__ has no 'moe.quant.",
       [&](auto*, auto* m) { m->erase(key); }},
      {"but the tensor's dtype is F32",
       [&](auto* ts, auto*) {
         for (auto& t : *ts)
           if (t.name == up) t = {up, DT_F32, {32, 64}, f32.data()};
       }},
  };
  for (const Bad& b : bad) {
    fs::remove_all(root + "/bad");
    moe_test::copy_dir(root + "/q", root + "/bad");
    rewrite(root + "/bad", b.edit);
    Model m;
    const std::string e = error_of([&] { model_load(&m, root + "/bad"); });
    EXPECT_NE(e.find(b.what), std::string::npos) << e;
    EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  }
  // Quantizing a quantized checkpoint is refused.
  const std::string e =
      error_of([&] { ckpt_quantize(root + "/q", root + "/qq", QT_Q8_0, false, &st); });
  EXPECT_NE(e.find("already holds quantized tensors"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(root + "/qq"));
  fs::remove_all(root);
}

// gpt-oss experts are quantized along their input axis (':t'): raw rows with a row step of 2 for
// the interleaved gate/up, the same values as the dequantized load, within Q4_0 rounding of the
// original weights.
TEST(CkptWrite, GptOssTransposedExperts) {
  const std::string root = moe_test::make_temp_dir("gptoss");
  const std::string fixture = moe_test::fixture_path("gpt_oss_base");
  CkptWriteStats st;
  ckpt_quantize(fixture, root + "/q", QT_Q4_0, true, &st);
  StArchive ar;
  st_open_file(&ar, root + "/q/model.safetensors");
  EXPECT_EQ(ar.metadata.at("moe.quant.model.layers.0.mlp.experts.gate_up_proj"), "q4_0:8,64,64:t");
  EXPECT_EQ(ar.metadata.at("moe.quant.model.layers.0.mlp.experts.down_proj"), "q4_0:8,32,64:t");
  Model raw, deq, orig;
  model_load(&raw, root + "/q");
  LoadOptions lo;
  lo.dequantize = true;
  model_load(&deq, root + "/q", lo);
  model_load(&orig, fixture);
  const int D = orig.cfg.hidden, F = orig.cfg.expert_ffn;
  std::vector<float> row(std::max(D, F));
  for (int l = 0; l < orig.cfg.n_layers; ++l) {
    for (int e = 0; e < orig.cfg.n_experts; ++e) {
      const ExpertWeights& r = raw.layers[l].experts[e];
      const ExpertWeights& d = deq.layers[l].experts[e];
      const ExpertWeights& o = orig.layers[l].experts[e];
      ASSERT_EQ(r.gate, nullptr);
      ASSERT_EQ(r.gate_q.type, QT_Q4_0);
      const std::pair<const QWeight*, std::pair<const float*, const float*>> mats[] = {
          {&r.gate_q, {d.gate, o.gate}}, {&r.up_q, {d.up, o.up}}};
      for (const auto& [q, fd] : mats) {
        for (int f = 0; f < F; ++f) {
          dequantize_row(q->type, q->data + f * q->stride, row.data(), D);
          for (int i = 0; i < D; ++i) {
            ASSERT_EQ(row[i], fd.first[f * D + i]);
            ASSERT_NEAR(row[i], fd.second[f * D + i], 0.1);  // q4_0 step of N(0, 0.1) weights
          }
        }
      }
      for (int i = 0; i < D; ++i) {
        dequantize_row(r.down_q.type, r.down_q.data + i * r.down_q.stride, row.data(), F);
        for (int f = 0; f < F; ++f) {
          ASSERT_EQ(row[f], d.down[i * F + f]);
          ASSERT_NEAR(row[f], o.down[i * F + f], 0.1);
        }
      }
      EXPECT_EQ(std::vector<float>(r.gate_b, r.gate_b + F),
                std::vector<float>(o.gate_b, o.gate_b + F));
    }
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace moe
