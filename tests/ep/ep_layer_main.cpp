// The expert-parallel MoE layer against the one-process layer, run under mpirun (-np 2, -np 4).
//
// Every rank builds the same random block and the same batch of P * n tokens. The reference is the
// one-process layer (local dispatcher) on the whole batch, computed on every rank. Then:
//  - data-parallel (training): rank r runs tokens [r n, (r + 1) n) through the expert-parallel
//    layer; its outputs and input gradients must equal the reference's rows, the balancing losses
//    the reference's, and the parameter gradients summed over the ranks the reference's;
//  - replicated (inference): every rank runs the whole batch; outputs equal the reference's.
// Routers: softmax top-k with the Switch aux loss and z-loss, sigmoid with a correction bias and
// the sequence-wise loss, expert choice, capacity with drops, noisy top-k, hash, and a gated
// shared expert. Exits non-zero (on every rank) on any mismatch, or when no rows crossed ranks.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "moe/moe_layer.h"
#include "moe/moe_train.h"
#include "moe_block.h"

namespace moe {
namespace {

struct Case {
  const char* name;
  RouterSpec spec;
  MoeLossSpec ls;
  int shared = 0;
  bool gate = false;
  int E = 8;
};

std::vector<Case> cases() {
  std::vector<Case> v;
  auto base = [](RouterKind k) {
    RouterSpec s;
    s.kind = k;
    return s;
  };
  MoeLossSpec aux_z;
  aux_z.aux = 0.01f;
  aux_z.z = 0.001f;
  v.push_back({"softmax_topk aux+z", base(ROUTER_TOKEN_CHOICE), aux_z});
  RouterSpec sig = base(ROUTER_TOKEN_CHOICE);
  sig.score = SCORE_SIGMOID;
  sig.has_correction_bias = true;
  sig.norm_topk = true;
  sig.group = GROUP_TOP2_SUM;
  sig.n_group = 4;
  sig.topk_group = 2;
  MoeLossSpec seq;
  seq.aux = 0.0f;
  seq.z = 0.0f;
  seq.seq_aux = 0.003f;
  seq.device = 0.002f;
  seq.n_devices = 2;
  seq.comm = 0.02f;  // DeepSeek-V2's communication balance loss, over the same two devices
  v.push_back({"sigmoid bias groups seq_aux+device+comm", sig, seq});
  v.push_back({"expert_choice", base(ROUTER_EXPERT_CHOICE), aux_z});
  MoeLossSpec cap = aux_z;
  cap.capacity_factor = 1.0f;
  v.push_back({"capacity 1.0 (drops)", base(ROUTER_TOKEN_CHOICE), cap, 4, true});
  v.push_back({"noisy_topk", base(ROUTER_NOISY_TOPK), aux_z});
  v.push_back({"hash + shared", base(ROUTER_HASH), MoeLossSpec{}, 4, false});
  return v;
}

double max_abs_diff(const float* a, const float* b, size_t n, double* scale) {
  double d = 0, s = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    s = std::max(s, std::fabs(static_cast<double>(b[i])));
  }
  *scale = s;
  return d;
}

// Returns the number of failed checks (the same on every rank).
int run_case(Comm& comm, const Case& k) {
  const int P = comm.size(), r = comm.rank(), n = 6, Ng = n * P, seq = 3;
  Block ref(k.spec, k.shared, k.gate, false, k.E), ep(k.spec, k.shared, k.gate, false, k.E);
  const int D = ref.c.hidden;
  std::mt19937 gen(17);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(Ng) * D), dout(x.size());
  for (float& v : x) v = nd(gen);
  for (float& v : dout) v = nd(gen);
  std::vector<int32_t> ids(Ng);
  for (int t = 0; t < Ng; ++t) ids[t] = (t * 7) % 11;
  // Reference: one process, the whole batch.
  MoeActs a;
  moe_acts_init(&a, ref.c, Ng);
  std::vector<float> out_ref(x.size()), dx_ref(x.size());
  const MoeLosses L_ref = moe_train_forward(out_ref.data(), &a, ref.c, ref.w, ref.p.data() + ref.noise,
                                            k.ls, x.data(), ids.data(), Ng, seq, 7, true);
  moe_train_backward(dx_ref.data(), &a, ref.c, ref.w, ref.p.data() + ref.noise, ref.gw,
                     ref.g.data() + ref.noise, k.ls, x.data(), dout.data(), seq, 1.0f);
  // Data-parallel expert parallelism: this rank's n tokens.
  MoeActs b;
  moe_acts_init(&b, ep.c, n);
  moe_state_enable_ep(&b, ep.c, &comm, false);
  const size_t o = static_cast<size_t>(r) * n * D, m = static_cast<size_t>(n) * D;
  std::vector<float> out(m), dx(m);
  const MoeLosses L = moe_train_forward(out.data(), &b, ep.c, ep.w, ep.p.data() + ep.noise, k.ls,
                                        x.data() + o, ids.data() + r * n, n, seq, 7, true);
  moe_train_backward(dx.data(), &b, ep.c, ep.w, ep.p.data() + ep.noise, ep.gw,
                     ep.g.data() + ep.noise, k.ls, x.data() + o, dout.data() + o, seq, 1.0f);
  comm.allreduce(ep.g.data(), static_cast<int64_t>(ep.g.size()), ReduceType::F32, ReduceOp::SUM);
  const int64_t moved = comm_sum(comm, b.ep_dispatcher->bytes_sent());
  // Replicated (inference): every rank the whole batch, no losses.
  MoeState c;
  moe_state_init(&c, ep.c, Ng, false);
  moe_state_enable_ep(&c, ep.c, &comm, true);
  MoeState c1;
  moe_state_init(&c1, ref.c, Ng, false);
  std::vector<float> inf(x.size()), inf_ref(x.size());
  moe_forward(inf.data(), ep.c, ep.w, x.data(), Ng, &c, ids.data(), 0, 3);
  moe_forward(inf_ref.data(), ref.c, ref.w, x.data(), Ng, &c1, ids.data(), 0, 3);

  int bad = 0;
  auto expect = [&](const char* what, double d, double scale, double tol) {
    const double worst = comm_max(comm, d / scale);
    if (r == 0) std::printf("  %-28s max|diff|/max|ref| = %.2e\n", what, worst);
    if (!(worst <= tol)) {
      if (r == 0) std::printf("FAIL: %s: %s differs by %.3e (tolerance %.1e)\n", k.name, what, worst, tol);
      ++bad;
    }
  };
  double s = 0;
  double d = max_abs_diff(out.data(), out_ref.data() + o, m, &s);
  expect("output (data-parallel)", d, s, 1e-5);
  d = max_abs_diff(dx.data(), dx_ref.data() + o, m, &s);
  expect("dx (data-parallel)", d, s, 1e-5);
  d = max_abs_diff(ep.g.data(), ref.g.data(), ref.g.size(), &s);
  expect("parameter gradients", d, s, 1e-5);
  d = max_abs_diff(inf.data(), inf_ref.data(), inf.size(), &s);
  expect("output (replicated)", d, s, 1e-5);
  const double lt = std::fabs(L.total() - L_ref.total()) / std::max(1e-30, std::fabs(L_ref.total()));
  expect("balancing losses", lt, 1.0, 1e-6);
  if (k.ls.capacity_factor > 0 && a.routing.dropped == 0) {
    if (r == 0) std::printf("FAIL: %s: the reference dropped nothing\n", k.name);
    ++bad;
  }
  if (moved <= 0) {
    if (r == 0) std::printf("FAIL: %s: no rows crossed ranks\n", k.name);
    ++bad;
  }
  return bad;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::comm_init(&argc, &argv);
  moe::Comm& w = moe::comm_world();
  if (w.size() < 2) {
    std::fprintf(stderr, "ep_layer_test: run it under mpirun with at least 2 ranks\n");
    return 1;
  }
  int bad = 0;
  try {
    for (const moe::Case& k : moe::cases()) {
      if (w.rank() == 0) std::printf("%s, %d ranks\n", k.name, w.size());
      bad += moe::run_case(w, k);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ep_layer_test: rank %d: %s\n", w.rank(), e.what());
    moe::comm_abort(1);
  }
  if (w.rank() == 0) std::printf(bad ? "FAILED: %d checks\n" : "ok\n", bad);
  moe::comm_finalize();
  return bad ? 1 : 0;
}
