// One training step of the trainable model against a PyTorch float64 autograd reference
// (tests/fixtures/train/<case>/, made by scripts/fixtures/make_train_reference.py): the loss terms
// (ce, Switch aux, z, sequence-wise aux, device-level, total), the routing (experts per token,
// capacity drops, expert choice's token sets) and the gradient of loss_scale * total for every
// trainable parameter, through the public training API (train_model_alloc,
// train_model_load_weights, train_forward, train_backward). Cases cover token choice (softmax,
// sigmoid + correction bias, group-limited), noisy top-k with the engine's documented
// deterministic noise, expert choice, hash routing, capacity dropping, loss_scale 0.5 and two
// multi-token-prediction modules (per-depth cross-entropies too).
// Gradients: max|g - ref| <= 1e-4 * max|ref| per tensor.
// MOE_TRAIN_REF_VERBOSE=1 prints every loss term and every tensor's relative error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "ops/router.h"
#include "train/train_model.h"

namespace moe {
namespace {

std::string case_dir(const std::string& name) {
  return std::string(MOE_FIXTURE_DIR) + "/train/" + name;
}

std::vector<double> read_f64(const StTensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  if (t.dtype == DT_F64) {
    std::memcpy(out.data(), t.data, out.size() * 8);
  } else {
    std::vector<float> f(out.size());
    dtype_to_f32(t.dtype, t.data, f.data(), f.size());
    std::copy(f.begin(), f.end(), out.begin());
  }
  return out;
}

std::vector<int64_t> read_i64(const StTensor& t) {
  EXPECT_EQ(t.dtype, DT_I64) << t.name;
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.data, out.size() * 8);
  return out;
}

float meta_float(const StArchive& ar, const char* key, float fallback = 0.0f) {
  auto it = ar.metadata.find(key);
  if (it == ar.metadata.end()) return fallback;
  return std::strtof(it->second.c_str(), nullptr);
}

class TrainReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainReferenceTest, LossesAndGradientsMatchPyTorch) {
  const std::string dir = case_dir(GetParam());
  ModelConfig cfg;
  config_load(&cfg, dir);
  TrainModel tm;
  train_model_alloc(&tm, cfg);
  {
    StArchive wa;
    st_open_file(&wa, dir + "/model.safetensors");
    train_model_load_weights(&tm, wa);
  }
  StArchive ref;
  st_open_file(&ref, dir + "/reference.safetensors");
  tm.losses = MoeLossSpec();
  tm.losses.aux = meta_float(ref, "aux");
  tm.losses.z = meta_float(ref, "z");
  tm.losses.seq_aux = meta_float(ref, "seq_aux");
  tm.losses.device = meta_float(ref, "device");
  tm.losses.n_devices = static_cast<int>(meta_float(ref, "n_devices", 1.0f));
  tm.losses.capacity_factor = meta_float(ref, "capacity_factor");
  tm.mtp_weight = meta_float(ref, "mtp_weight");  // MTP cases only
  const float loss_scale = meta_float(ref, "loss_scale", 1.0f);
  const uint64_t forward_seed = static_cast<uint64_t>(meta_float(ref, "forward_seed"));

  StArchive batch;
  st_open_file(&batch, dir + "/batch.safetensors");
  const StTensor& ids_t = batch.get("ids");
  ASSERT_EQ(ids_t.shape.size(), 2u);
  const int B = static_cast<int>(ids_t.shape[0]), T = static_cast<int>(ids_t.shape[1]);
  const std::vector<int64_t> ids = read_i64(ids_t), targets = read_i64(batch.get("targets"));
  ASSERT_EQ(targets.size(), ids.size());

  TrainActs acts;
  train_acts_init(&acts, tm, B, T);
  for (int i = 0; i < B * T; ++i) {  // flattened b*T + t
    acts.ids[i] = static_cast<int32_t>(ids[i]);
    acts.targets[i] = static_cast<int32_t>(targets[i]);
  }
  // Noisy top-k: the engine's noise draws (rng_normal of router.h) are the reference's.
  for (int l = 0; l < cfg.n_layers; ++l) {
    const StTensor* nt = ref.find("noise." + std::to_string(l));
    if (!nt) continue;
    const std::vector<double> want = read_f64(*nt);
    const uint64_t seed = router_layer_seed(forward_seed, l);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(rng_normal(seed, i), want[i], 1e-12) << "noise draw " << i << " of layer " << l;
  }
  const StepLosses L = train_forward(&tm, &acts, forward_seed, true);
  std::fill(tm.grads.begin(), tm.grads.end(), 0.0f);
  train_backward(&tm, &acts, loss_scale);

  // Routing: the experts chosen per token must be the reference's (the fixtures keep a margin
  // > 1e-3 between the K-th and (K+1)-th selection value, so float32 cannot flip them).
  // Capacity cases also give which assignments were dropped (kept.<layer>, same order); expert
  // choice gives the (token, expert) assignments as a mask (route_mask.<layer>).
  const int K = cfg.top_k, E = cfg.n_experts;
  for (int l = 0; l < cfg.n_layers; ++l) {
    if (!cfg.is_moe[l]) continue;
    const std::string ls = std::to_string(l);
    const Routing& r = acts.layers[l].moe.routing;
    if (const StTensor* mt = ref.find("route_mask." + ls)) {
      const std::vector<int64_t> want = read_i64(*mt);
      std::vector<int64_t> got(static_cast<size_t>(B) * T * E, 0);
      for (int a = 0; a < r.A; ++a) got[static_cast<size_t>(r.tok[a]) * E + r.expert[a]] += 1;
      EXPECT_EQ(got, want) << "layer " << l << ": expert-choice assignments";
      continue;
    }
    const std::vector<int64_t> want = read_i64(ref.get("route." + ls));
    const StTensor* kt = ref.find("kept." + ls);
    const std::vector<int64_t> want_kept = kt ? read_i64(*kt) : std::vector<int64_t>();
    ASSERT_EQ(r.A, B * T * K);
    int dropped = 0;
    for (int t = 0; t < B * T; ++t) {
      std::vector<std::pair<int64_t, int64_t>> got;  // (expert, kept), by expert
      for (int k = 0; k < K; ++k) got.push_back({r.expert[t * K + k], r.kept[t * K + k] ? 1 : 0});
      std::sort(got.begin(), got.end());
      for (int k = 0; k < K; ++k) {
        EXPECT_EQ(got[k].first, want[t * K + k]) << "layer " << l << " token " << t;
        if (kt) {
          EXPECT_EQ(got[k].second, want_kept[t * K + k]) << "layer " << l << " token " << t;
        }
        dropped += got[k].second ? 0 : 1;
      }
    }
    EXPECT_EQ(dropped, static_cast<int>(meta_float(ref, "dropped"))) << "layer " << l;
  }

  // Loss terms, relative 1e-5.
  const struct {
    const char* name;
    double got;
  } terms[] = {{"ce", L.ce},
               {"aux", L.moe.aux},
               {"z", L.moe.z},
               {"seq_aux", L.moe.seq_aux},
               {"device", L.moe.device},
               {"total", L.total()}};
  const bool verbose = std::getenv("MOE_TRAIN_REF_VERBOSE") != nullptr;
  for (const auto& term : terms) {
    const StTensor* lt = ref.find(std::string("loss.") + term.name);
    if (!lt) {  // the older cases have no device-level loss
      EXPECT_EQ(term.got, 0.0) << "loss." << term.name << " has no reference";
      continue;
    }
    const double want = read_f64(*lt)[0];
    if (verbose)
      std::printf("  loss.%-8s engine %.12g  reference %.12g  rel %.3e\n", term.name, term.got, want,
                  want != 0 ? std::fabs(term.got - want) / std::fabs(want) : std::fabs(term.got));
    EXPECT_LE(std::fabs(term.got - want), 1e-5 * std::fabs(want) + 1e-12)
        << "loss." << term.name << ": engine " << term.got << ", reference " << want;
  }

  // Each MTP depth's cross-entropy (MTP cases), relative 1e-5.
  ASSERT_EQ(L.mtp.size(), static_cast<size_t>(cfg.mtp_layers));
  for (int k = 0; k < cfg.mtp_layers; ++k) {
    const double want = read_f64(ref.get("loss.mtp." + std::to_string(k)))[0];
    EXPECT_LE(std::fabs(L.mtp[k] - want), 1e-5 * std::fabs(want)) << "loss.mtp." << k;
  }

  // Gradients, per tensor: max|g - ref| <= 1e-4 * max|ref|.
  double worst = -1.0;
  std::string worst_name;
  int n_checked = 0;
  for (size_t i = 0; i < tm.specs.size(); ++i) {
    const std::string& name = tm.specs[i].name;
    const StTensor* rt = ref.find("grad." + name);
    if (!tm.trainable[i]) {
      EXPECT_EQ(rt, nullptr) << name << " is not trainable but has a reference gradient";
      continue;
    }
    ASSERT_NE(rt, nullptr) << "no reference gradient for " << name;
    ASSERT_EQ(rt->shape, tm.specs[i].shape) << name;
    const std::vector<double> want = read_f64(*rt);
    const float* got = tm.grads.data() + tm.offset[i];
    double err = 0.0, mx = 0.0;
    for (size_t j = 0; j < want.size(); ++j) {
      err = std::max(err, std::fabs(static_cast<double>(got[j]) - want[j]));
      mx = std::max(mx, std::fabs(want[j]));
    }
    EXPECT_GT(mx, 0.0) << name << ": the reference gradient is zero (the case does not exercise it)";
    const double rel = mx > 0 ? err / mx : err;
    EXPECT_LE(err, 1e-4 * mx) << name << ": max|g - ref| " << err << ", max|ref| " << mx;
    if (verbose) std::printf("  %-55s rel %.3e  (max|ref| %.3e)\n", name.c_str(), rel, mx);
    if (rel > worst) {
      worst = rel;
      worst_name = name;
    }
    ++n_checked;
  }
  // Every reference gradient belongs to a trainable tensor of the model.
  int n_ref = 0;
  for (const auto& kv : ref.tensors) n_ref += kv.first.rfind("grad.", 0) == 0 ? 1 : 0;
  EXPECT_EQ(n_ref, n_checked);
  std::printf("[%s] %d gradients; worst relative error %.3e in %s\n", GetParam().c_str(), n_checked,
              worst, worst_name.c_str());
  RecordProperty("worst_rel_err", std::to_string(worst));
  RecordProperty("worst_tensor", worst_name);
}

INSTANTIATE_TEST_SUITE_P(TrainReference, TrainReferenceTest,
                         ::testing::Values("softmax_aux_z", "sigmoid_bias_shared",
                                           "qwen2_style_gated_shared", "noisy_topk_fixed_noise",
                                           "expert_choice", "hash_routing", "group_limited_softmax",
                                           "group_limited_sigmoid_bias", "capacity_drop_seq_aux",
                                           "device_loss_scale_half", "mtp_two_depths"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace moe
