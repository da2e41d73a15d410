// One training step of a tiny golden checkpoint of each of the seven families against a PyTorch
// float64 autograd reference (tests/fixtures/train_families/<fixture>/reference.safetensors, made
// by scripts/fixtures/make_family_train_fixtures.py from the architecture notes, not from this
// engine). The checkpoint itself is the golden fixture tests/fixtures/<fixture>/.
//
// Required, per family: the experts each token selects in every MoE layer equal route.<layer>;
// ce, Switch aux (alpha 0.01), z-loss (beta 0.001) and total within 1e-5 relative; for every
// trainable tensor max|g - ref| <= 1e-4 * max|ref| (the reference is stored in 16-bit fixed point
// with step max|ref| / 32767; the bound is shrunk by half a step so that the float64 gradient
// itself lies within 1e-4 * max|ref|). Every reference gradient must belong to a trainable tensor
// of the arena and vice versa. A failure names the family and the first mismatching tensor.
// MOE_FAMILY_TRAIN_VERBOSE=1 prints every loss term and every tensor's relative error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "train/train_model.h"

namespace moe {
namespace {

struct Family {
  const char* fixture;  // golden checkpoint folder under tests/fixtures/
  const char* family;   // model_type
};

const Family kFamilies[] = {
    {"mixtral_legacy", "mixtral"},         {"qwen2_moe_shared", "qwen2_moe"},
    {"qwen3_moe_qknorm", "qwen3_moe"},     {"olmoe_clip_mha", "olmoe"},
    {"deepseek_v2_qlora", "deepseek_v2"},  {"deepseek_v3_base", "deepseek_v3"},
    {"gpt_oss_base", "gpt_oss"},
};

std::vector<double> read_f64(const StTensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  if (t.dtype == DT_F64) {
    std::memcpy(out.data(), t.data, out.size() * 8);
  } else if (t.dtype == DT_I16) {
    std::vector<int16_t> q(out.size());
    std::memcpy(q.data(), t.data, q.size() * 2);
    std::copy(q.begin(), q.end(), out.begin());
  } else {
    std::vector<float> f(out.size());
    dtype_to_f32(t.dtype, t.data, f.data(), f.size());
    std::copy(f.begin(), f.end(), out.begin());
  }
  return out;
}

std::vector<int64_t> read_i64(const StTensor& t) {
  if (t.dtype != DT_I64) throw MoeError(t.name + ": expected I64");
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.data, out.size() * 8);
  return out;
}

float meta_float(const StArchive& ar, const char* key) {
  auto it = ar.metadata.find(key);
  if (it == ar.metadata.end()) throw MoeError(std::string("reference: no metadata '") + key + "'");
  return std::strtof(it->second.c_str(), nullptr);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < s.size(); ++i) out << (i ? "," : "") << s[i];
  out << ']';
  return out.str();
}

// The trainer's step after loading; every mismatch is appended to fails.
struct Step {
  TrainModel tm;
  TrainActs acts;
  StepLosses L;
};

void run_step(Step* s, const std::string& ckpt, const StArchive& ref) {
  ModelConfig cfg;
  config_load(&cfg, ckpt);
  train_model_alloc(&s->tm, cfg);
  {
    StArchive wa;
    st_open_dir(&wa, ckpt);
    train_model_load_weights(&s->tm, wa);
  }
  s->tm.losses = MoeLossSpec();
  s->tm.losses.aux = meta_float(ref, "aux");
  s->tm.losses.z = meta_float(ref, "z");
  s->tm.losses.seq_aux = 0.0f;
  s->tm.losses.device = 0.0f;
  s->tm.losses.capacity_factor = meta_float(ref, "capacity_factor");

  const StTensor& ids_t = ref.get("ids");
  if (ids_t.shape.size() != 2) throw MoeError("reference: ids must be [B, T]");
  const int B = static_cast<int>(ids_t.shape[0]), T = static_cast<int>(ids_t.shape[1]);
  const std::vector<int64_t> ids = read_i64(ids_t), targets = read_i64(ref.get("targets"));
  if (targets.size() != ids.size()) throw MoeError("reference: targets differ in size from ids");
  train_acts_init(&s->acts, s->tm, B, T);
  for (int i = 0; i < B * T; ++i) {  // flattened b*T + t
    s->acts.ids[i] = static_cast<int32_t>(ids[i]);
    s->acts.targets[i] = static_cast<int32_t>(targets[i]);
  }
  // Inference routing semantics (no noise; dropless since capacity_factor is 0).
  s->L = train_forward(&s->tm, &s->acts, 0, false);
  std::fill(s->tm.grads.begin(), s->tm.grads.end(), 0.0f);
  train_backward(&s->tm, &s->acts, 1.0f);
}

void check_routing(const Step& s, const StArchive& ref, std::vector<std::string>* fails) {
  const ModelConfig& cfg = s.tm.cfg;
  const int N = s.acts.B * s.acts.T, K = cfg.top_k;
  int n_routes = 0;
  for (const auto& kv : ref.tensors) n_routes += kv.first.rfind("route.", 0) == 0 ? 1 : 0;
  int n_moe = 0;
  for (int l = 0; l < cfg.n_layers; ++l) {
    const StTensor* rt = ref.find("route." + std::to_string(l));
    if (!cfg.is_moe[l]) {
      if (rt) fails->push_back("layer " + std::to_string(l) + " is dense in the engine's config "
                               "but MoE in the reference");
      continue;
    }
    ++n_moe;
    if (!rt) {
      fails->push_back("layer " + std::to_string(l) + " is MoE in the engine but dense in the "
                       "reference");
      continue;
    }
    const std::vector<int64_t> want = read_i64(*rt);
    const Routing& r = s.acts.layers[l].moe.routing;
    if (r.A != N * K || static_cast<int>(want.size()) != N * K) {
      fails->push_back("layer " + std::to_string(l) + ": " + std::to_string(r.A) +
                       " assignments, reference " + std::to_string(want.size()));
      continue;
    }
    int bad = 0, first = -1;
    for (int t = 0; t < N; ++t) {
      std::vector<int64_t> got(r.expert.begin() + t * K, r.expert.begin() + (t + 1) * K);
      std::sort(got.begin(), got.end());
      if (!std::equal(got.begin(), got.end(), want.begin() + t * K)) {
        if (first < 0) first = t;
        ++bad;
      }
    }
    if (bad)
      fails->push_back("routing of layer " + std::to_string(l) + ": " + std::to_string(bad) +
                       " of " + std::to_string(N) + " tokens choose other experts (first: token " +
                       std::to_string(first) + ")");
  }
  if (n_routes != n_moe)
    fails->push_back("the reference routes " + std::to_string(n_routes) +
                     " MoE layers, the engine has " + std::to_string(n_moe));
}

void check_losses(const Step& s, const StArchive& ref, bool verbose,
                  std::vector<std::string>* fails) {
  const struct {
    const char* name;
    double got;
  } terms[] = {{"ce", s.L.ce}, {"aux", s.L.moe.aux}, {"z", s.L.moe.z}, {"total", s.L.total()}};
  for (const auto& term : terms) {
    const double want = read_f64(ref.get(std::string("loss.") + term.name))[0];
    const double rel = std::fabs(term.got - want) / std::fabs(want);
    if (verbose)
      std::printf("  loss.%-6s engine %.12g  reference %.12g  rel %.3e\n", term.name, term.got,
                  want, rel);
    if (!(std::fabs(term.got - want) <= 1e-5 * std::fabs(want))) {
      std::ostringstream m;
      m << "loss." << term.name << ": engine " << term.got << ", reference " << want
        << " (relative error " << rel << " > 1e-5)";
      fails->push_back(m.str());
    }
  }
  if (s.L.moe.seq_aux != 0.0 || s.L.moe.device != 0.0)
    fails->push_back("sequence-wise or device-level loss is non-zero with alpha 0");
}

void check_gradients(const Step& s, const StArchive& ref, bool verbose,
                     std::vector<std::string>* fails) {
  const TrainModel& tm = s.tm;
  int n_checked = 0, n_bad = 0;
  std::string first_bad;
  for (size_t i = 0; i < tm.specs.size(); ++i) {
    const std::string& name = tm.specs[i].name;
    const StTensor* rt = ref.find("grad." + name);
    if (!tm.trainable[i]) {
      if (rt) fails->push_back(name + " is not trainable but has a reference gradient");
      continue;
    }
    if (!rt) {
      fails->push_back("no reference gradient for the arena's tensor " + name);
      continue;
    }
    ++n_checked;
    if (rt->shape != tm.specs[i].shape) {
      fails->push_back(name + ": arena shape " + shape_str(tm.specs[i].shape) +
                       ", reference gradient " + shape_str(rt->shape));
      continue;
    }
    std::vector<double> want = read_f64(*rt);
    const double step = read_f64(ref.get("grad_scale." + name))[0];  // one fixed-point unit
    for (double& v : want) v *= step;
    const float* got = tm.grads.data() + tm.offset[i];
    double err = 0.0, mx = 0.0;
    for (size_t j = 0; j < want.size(); ++j) {
      err = std::max(err, std::fabs(static_cast<double>(got[j]) - want[j]));
      mx = std::max(mx, std::fabs(want[j]));
    }
    const double tol = 1e-4 * mx - 0.5 * step;
    if (verbose) std::printf("  %-58s rel %.3e  (max|ref| %.3e)\n", name.c_str(), err / mx, mx);
    if (!(mx > 0.0 && err <= tol)) {
      if (n_bad++ == 0) first_bad = name;
      std::ostringstream m;
      m << "gradient of " << name << ": max|g - ref| " << err << " > " << tol << " (max|ref| "
        << mx << ", relative " << err / mx << ")";
      if (n_bad <= 8) fails->push_back(m.str());
    }
  }
  if (n_bad)
    fails->push_back(std::to_string(n_bad) + " of " + std::to_string(n_checked) +
                     " gradients mismatch; the first is " + first_bad);
  int n_ref = 0;
  for (const auto& kv : ref.tensors) {
    if (kv.first.rfind("grad.", 0) != 0) continue;
    ++n_ref;
    if (train_model_find(tm, kv.first.substr(5)) < 0)
      fails->push_back("reference gradient " + kv.first + " names no tensor of the arena");
  }
  if (n_ref != n_checked)
    fails->push_back("the reference has " + std::to_string(n_ref) + " gradients, the arena " +
                     std::to_string(n_checked) + " trainable tensors");
}

void PrintTo(const Family& f, std::ostream* os) { *os << f.family << " (" << f.fixture << ")"; }

class FamilyTrainTest : public ::testing::TestWithParam<Family> {};

TEST_P(FamilyTrainTest, OneStepMatchesPyTorch) {
  const Family& f = GetParam();
  const std::string ckpt = std::string(MOE_FIXTURE_DIR) + "/" + f.fixture;
  const std::string ref_path =
      std::string(MOE_FIXTURE_DIR) + "/train_families/" + f.fixture + "/reference.safetensors";
  const bool verbose = std::getenv("MOE_FAMILY_TRAIN_VERBOSE") != nullptr;
  const std::string who = std::string(f.family) + " (" + f.fixture + "): ";

  StArchive ref;
  st_open_file(&ref, ref_path);  // a missing reference is an error, not a skip

  // The step runs first in a child process (re-executed, so safe with OpenMP): a trainer that
  // crashes on this family (e.g. on a weight view it does not bind) then fails this test instead
  // of ending the test binary. Errors it throws are reported by the run below.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        try {
          Step child;
          run_step(&child, ckpt, ref);
        } catch (const std::exception&) {
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "")
      << who << "the trainer crashed in one training step (see the status above)";
  if (HasFailure()) return;

  std::vector<std::string> fails;
  Step s;
  try {
    run_step(&s, ckpt, ref);
  } catch (const std::exception& e) {
    FAIL() << who << "the trainer cannot run one step: " << e.what();
  }
  check_routing(s, ref, &fails);
  check_losses(s, ref, verbose, &fails);
  check_gradients(s, ref, verbose, &fails);
  for (const std::string& m : fails) ADD_FAILURE() << who << m;
  if (fails.empty()) std::printf("[%s] loss and every gradient match\n", f.fixture);
}

INSTANTIATE_TEST_SUITE_P(FamilyTrain, FamilyTrainTest, ::testing::ValuesIn(kFamilies),
                         [](const ::testing::TestParamInfo<Family>& info) {
                           return std::string(info.param.family);
                         });

}  // namespace
}  // namespace moe
