// llamacpp_peer: moe.cpp's MoE layer (moe_forward) against the MoE FFN graph llama.cpp builds
// (peer_graph.h), on the same weight bytes, the same inputs and the same thread count, in one
// process. Per model, type and token count T:
//  1. check: both sides run the same T inputs once; the experts each token selects must be the
//     same set (a swap at a near tie of the router logits, |difference| < 1e-4, is reported and
//     allowed), the combine weights equal within 1e-5 (relative), and the outputs within a
//     relative L2 error of 5e-2. Both sides quantize activations on their own (ggml: Q8_0 for
//     q4_0 / q8_0 weights, Q8_K for the K-quants; moe.cpp: Q8_0 for q4_0 / q8_0 at small T, fp32
//     otherwise), each a relative rms error of ~0.5-1% per activation, ~1-2% at the output, as
//     bench/layer_bench.h derives; a wrong routing, renormalisation or layout gives O(1).
//  2. time: warm-up calls, then `reps` rounds of (moe.cpp call, ggml graph call), interleaved,
//     each call timed alone; the median of each side is reported. Warm: the same weights every
//     call on both sides. Cold (the token counts of --cold-tokens): before each call, untimed,
//     the weights it will read are flushed from the caches (clflush), so they come from DRAM.
// Writes a Markdown report and a JSON file beside it.
//
// Usage: llamacpp_peer --config bench/configs/olmoe-1b-7b.json [--config ...] [--types q4_0,...]
//          [--tokens 1,8,64,512] [--cold-tokens 1,8] [--threads 2] [--min-time 1] [--min-reps 10] [--seed 1]
//          [--max-case-time 30] [--out bench/results/llamacpp_peer.md] [--peer-desc TEXT]
#include <omp.h>
#include <unistd.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/machine.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "model/checkpoint_write.h"
#include "moe/moe_layer.h"
#include "ops/blas_env.h"
#include "ops/ops.h"
#include "ops/router.h"
#include "peer_graph.h"
#include "peer_layer.h"
#include "peer_report.h"

namespace peer {
namespace {

struct Options {
  std::vector<std::string> configs;
  std::vector<std::string> types = {"q4_0", "q8_0", "q4_k", "q6_k"};
  std::vector<int> tokens = {1, 8, 64, 512};
  std::vector<int> cold_tokens = {1, 8};
  int threads = 2;
  double min_time = 1.0;       // seconds of each side per case, at least min_reps calls...
  int min_reps = 10;
  double max_case_time = 30.0; // ...unless that exceeds this (then at least 3 calls)
  uint64_t seed = 1;
  std::string out = "bench/results/llamacpp_peer.md";
  std::string peer_desc;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  size_t i = 0;
  while (i <= s.size()) {
    const size_t j = std::min(s.find(',', i), s.size());
    if (j > i) v.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool types_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("option " + a + " needs a value");
    const std::string v = argv[++i];
    if (a == "--config") o.configs.push_back(v);
    else if (a == "--types") { o.types = split(v); types_given = true; }
    else if (a == "--tokens") {
      o.tokens.clear();
      for (const std::string& t : split(v)) o.tokens.push_back(std::stoi(t));
    } else if (a == "--cold-tokens") {
      o.cold_tokens.clear();
      for (const std::string& t : split(v)) o.cold_tokens.push_back(std::stoi(t));
    } else if (a == "--threads") o.threads = std::stoi(v);
    else if (a == "--min-time") o.min_time = std::stod(v);
    else if (a == "--min-reps") o.min_reps = std::stoi(v);
    else if (a == "--max-case-time") o.max_case_time = std::stod(v);
    else if (a == "--seed") o.seed = std::stoull(v);
    else if (a == "--out") o.out = v;
    else if (a == "--peer-desc") o.peer_desc = v;
    else throw std::runtime_error("unknown option " + a);
  }
  if (o.configs.empty()) throw std::runtime_error("--config: at least one config.json");
  if (o.threads <= 0) throw std::runtime_error("--threads must be positive");
  if (o.min_reps <= 0 || !(o.min_time >= 0)) throw std::runtime_error("--min-reps / --min-time");
  for (int T : o.tokens)
    if (T <= 0) throw std::runtime_error("--tokens: counts must be positive");
  if (o.tokens.empty() || (types_given && o.types.empty()))
    throw std::runtime_error("--tokens / --types: empty list");
  return o;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// What one model/type run shares across its token counts.
struct Run {
  const moe::ModelConfig* c = nullptr;
  const Options* opt = nullptr;
  HostLayer host;
  PeerLayer pl;
  moe::FfnScratch s;
  std::vector<float> X;      // (T_max, D) inputs, N(0, 1)
  std::vector<float> y_moe;  // (T_max, D)
  std::vector<float> y_peer; // (T_max, D)
  std::vector<int32_t> ids;  // (T_max) token ids (unused by token-choice routers)
  uint64_t route_seed = 0;
};

void moe_call(Run* r, int T) {
  moe::moe_forward(r->y_moe.data(), *r->c, r->host.lw, r->X.data(), T, &r->s, r->ids.data(), 0,
                   r->route_seed);
}

// Step 1 of the header: compares routing and outputs; throws on a mismatch.
void check_case(Run* r, PeerGraph* g, int T, CaseResult* k) {
  const int D = r->c->hidden, E = r->c->n_experts, K = r->c->top_k;
  moe_call(r, T);
  peer_graph_compute(r->pl, g);
  std::vector<int32_t> sel(static_cast<size_t>(T) * K);  // (T, K)
  std::vector<float> w(static_cast<size_t>(T) * K);      // (T, K)
  peer_graph_read(*g, r->y_peer.data(), sel.data(), w.data());
  for (int t = 0; t < T; ++t) {
    const int32_t* a = r->s.idx.data() + static_cast<int64_t>(t) * K;
    const float* lg = r->s.logits.data() + static_cast<int64_t>(t) * E;
    for (int j = 0; j < K; ++j) {
      const int e = sel[t * K + j];
      const int* hit = std::find(a, a + K, e);
      if (hit == a + K) {  // a different expert: allowed only at a near tie
        float kth = INFINITY;
        for (int i = 0; i < K; ++i) kth = std::min(kth, lg[a[i]]);
        if (std::fabs(lg[e] - kth) >= 1e-4f)
          throw std::runtime_error(moe::strfmt("T=%d token %d: ggml selected expert %d, moe.cpp did "
                                               "not (logit %g, moe.cpp's K-th %g)", T, t, e,
                                               lg[e], kth));
        ++k->near_ties;
        continue;
      }
      const float wm = r->s.w[static_cast<int64_t>(t) * K + (hit - a)], wp = w[t * K + j];
      k->max_w_diff = std::max<double>(k->max_w_diff, std::fabs(wm - wp) / (1e-30 + std::fabs(wm)));
    }
  }
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < static_cast<int64_t>(T) * D; ++i) {
    const double d = static_cast<double>(r->y_moe[i]) - r->y_peer[i];
    num += d * d;
    den += static_cast<double>(r->y_peer[i]) * r->y_peer[i];
  }
  k->rel_err = std::sqrt(num / std::max(den, 1e-300));
  k->tol = 5e-2;
  if (k->max_w_diff > 1e-5)
    throw std::runtime_error(moe::strfmt("T=%d: combine weights differ by %g (relative)", T,
                                         k->max_w_diff));
  if (!(k->rel_err <= k->tol))
    throw std::runtime_error(moe::strfmt("T=%d: outputs differ: relative L2 error %.3g > %.3g", T,
                                         k->rel_err, k->tol));
}

// Byte ranges of the weights one call reads.
struct Range {
  const void* p;
  int64_t n;
};

void flush(const std::vector<Range>& rs) {
  for (const Range& r : rs)
    for (int64_t i = 0; i < r.n; i += 64) _mm_clflush(static_cast<const char*>(r.p) + i);
  _mm_mfence();
}

// What each side reads for the experts in `touched` (both sides select the same; checked).
void weight_ranges(const Run& r, const std::vector<int>& touched, std::vector<Range>* a,
                   std::vector<Range>* b) {
  const HostLayer& h = r.host;
  const PeerLayer& p = r.pl;
  for (const HostBuf* hb : {&h.router, &h.router_b, &h.sel_b, &h.sh_gate, &h.sh_up, &h.sh_down,
                            &h.sh_gate_inp})
    if (hb->p) a->push_back({hb->data(), hb->n});
  for (const ggml_tensor* t : {p.router, p.router_b, p.sel_b, p.sh_gate, p.sh_up, p.sh_down,
                               p.sh_gate_inp})
    if (t) b->push_back({t->data, static_cast<int64_t>(ggml_nbytes(t))});
  for (int e : touched) {
    for (const HostBuf* hb : {&h.gate_exps, &h.up_exps, &h.down_exps}) {
      const int64_t per = hb->n / h.E;
      a->push_back({hb->data() + e * per, per});
    }
    for (const ggml_tensor* t : {p.gate_exps, p.up_exps, p.down_exps})
      b->push_back({static_cast<const char*>(t->data) + e * t->nb[2], static_cast<int64_t>(t->nb[2])});
  }
}

// Step 2 of the header. Cold: before each timed call, that side's weights are evicted from
// every cache level (clflush, untimed), so they come from DRAM, as when decoding a model larger
// than the caches; both sides alike.
void time_case(Run* r, PeerGraph* g, int T, const std::vector<int>& touched, CaseResult* k) {
  const Options& o = *r->opt;
  std::vector<Range> ra, rb;
  if (k->cold) weight_ranges(*r, touched, &ra, &rb);
  const auto call_a = [&]() {
    if (k->cold) flush(ra);
    const double t0 = now_s();
    moe_call(r, T);
    return now_s() - t0;
  };
  const auto call_b = [&]() {
    if (k->cold) flush(rb);
    const double t0 = now_s();
    peer_graph_compute(r->pl, g);
    return now_s() - t0;
  };
  double ta = 0.0, tb = 0.0, spent = 0.0;
  for (int i = 0; i < 3 && spent < o.min_time; ++i) {  // warm-up, interleaved; the last pair
    ta = call_a();                                       // estimates the count of timed calls
    tb = call_b();
    spent += ta + tb;
  }
  int reps = std::max(o.min_reps, static_cast<int>(std::min(1e6, o.min_time / std::max(ta, tb))));
  if (reps * (ta + tb) > o.max_case_time)
    reps = std::max(3, static_cast<int>(o.max_case_time / (ta + tb)));
  std::vector<double> a(reps), b(reps);
  const moe::CpuShare share = moe::cpu_share_start();
  for (int i = 0; i < reps; ++i) {
    a[i] = call_a();
    b[i] = call_b();
  }
  k->others_cpu = moe::cpu_share_since(share).others;
  k->reps = reps;
  k->moe_us = median(a) * 1e6;
  k->peer_us = median(b) * 1e6;
  k->moe_us_min = *std::min_element(a.begin(), a.end()) * 1e6;
  k->peer_us_min = *std::min_element(b.begin(), b.end()) * 1e6;
}

// The work of one call: bytes it must read and flops (as bench/layer_bench.h counts them).
std::vector<int> case_work(const Run& r, int T, CaseResult* k) {
  const moe::ModelConfig& c = *r.c;
  const int E = c.n_experts;
  std::vector<int> touched;
  for (int e = 0; e < E; ++e)
    if (r.s.plan.off[e + 1] > r.s.plan.off[e]) touched.push_back(e);
  const double A = r.s.plan.off[E];
  const double D = c.hidden, F = c.expert_ffn, Fs = c.shared_ffn;
  k->experts_touched = static_cast<int>(touched.size());
  k->bytes = r.host.dense_bytes + static_cast<int64_t>(touched.size()) * r.host.expert_bytes;
  k->flops = 2.0 * A * 3 * D * F + 2.0 * T * 3 * D * Fs + 2.0 * T * D * E +
             (c.shared_ffn > 0 && c.shared_gate ? 2.0 * T * D : 0.0);
  return touched;
}

ModelResult run_model_type(const moe::ModelConfig& c, const std::string& name, moe::QType t,
                           const Options& o) {
  ModelResult m;
  m.model = name;
  m.type = moe::qtype_name(t);
  Run r;
  r.c = &c;
  r.opt = &o;
  std::fprintf(stderr, "llamacpp_peer: %s %s: building the layer\n", name.c_str(), m.type.c_str());
  host_layer_build(&r.host, c, t, o.seed);
  m.rows_checked = check_same_bytes(r.host);
  peer_layer_init(&r.pl, peer_spec_of(c, o.threads), peer_weights_of(r.host));
  m.placement = r.pl.placement;
  const int T_max = *std::max_element(o.tokens.begin(), o.tokens.end());
  moe::ffn_scratch_init(&r.s, c, T_max);
  const int layer = static_cast<int>(std::find(c.is_moe.begin(), c.is_moe.end(), 1) - c.is_moe.begin());
  r.route_seed = moe::router_layer_seed(0, layer);
  const int D = c.hidden;
  r.X.assign(static_cast<size_t>(T_max) * D, 0.0f);
  r.y_moe.assign(r.X.size(), 0.0f);
  r.y_peer.assign(r.X.size(), 0.0f);
  r.ids.assign(T_max, 0);
  for (int i = 0; i < T_max; ++i) {
    float* xt = r.X.data() + static_cast<int64_t>(i) * D;
    moe::random_normal_row(o.seed, 0xa11ce, i, xt, D);
    for (int j = 0; j < D; ++j) xt[j] *= 50.0f;  // N(0, 1)
  }
  for (int T : o.tokens) {
    PeerGraph g;
    peer_graph_build(&g, r.pl, T);
    peer_graph_set_input(&g, r.X.data());
    CaseResult k;
    k.tokens = T;
    check_case(&r, &g, T, &k);
    const std::vector<int> touched = case_work(r, T, &k);
    for (int cold = 0; cold < 2; ++cold) {
      if (cold && std::find(o.cold_tokens.begin(), o.cold_tokens.end(), T) == o.cold_tokens.end())
        continue;
      k.cold = cold;
      time_case(&r, &g, T, touched, &k);
      std::fprintf(stderr, "  T=%d %s: moe.cpp %.1f us, llama.cpp graph %.1f us (x%.2f), err %.3g\n",
                   T, cold ? "cold" : "warm", k.moe_us, k.peer_us, k.peer_us / k.moe_us, k.rel_err);
      m.cases.push_back(k);
    }
    peer_graph_free(&g);
  }
  peer_layer_free(&r.pl);
  return m;
}

std::string model_name(const std::string& path) {
  const size_t s = path.find_last_of('/');
  std::string base = s == std::string::npos ? path : path.substr(s + 1);
  const size_t dot = base.rfind(".json");
  return dot == std::string::npos ? base : base.substr(0, dot);
}

int peer_main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  moe::ops_set_threads(o.threads);
  Report rep;
  rep.machine = moe::machine_info();
  rep.threads = o.threads;
  rep.load_start = moe::load_average();
  rep.omp_wait_policy = std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)";
  rep.peer_desc = o.peer_desc;
  rep.argv = argv[0];
  for (int i = 1; i < argc; ++i) rep.argv += std::string(" ") + argv[i];
  rep.bw = moe::measure_read_bandwidth(moe::default_bandwidth_bytes(rep.machine.llc_bytes), 3);
  std::fprintf(stderr, "llamacpp_peer: DRAM read %.1f GB/s, %d threads\n", rep.bw.best_gbps, o.threads);
  std::vector<moe::ModelConfig> cfgs(o.configs.size());
  for (size_t i = 0; i < o.configs.size(); ++i)
    moe::config_parse(&cfgs[i], moe::read_text_file(o.configs[i]), o.configs[i]);
  for (const std::string& ts : o.types) {  // types outer: each type's models side by side
    moe::QType t;
    if (!moe::qtype_parse_any(ts, &t)) throw std::runtime_error("--types: unknown type " + ts);
    for (size_t i = 0; i < cfgs.size(); ++i) {
      rep.models.push_back(run_model_type(cfgs[i], model_name(o.configs[i]), t, o));
      rep.load_end = moe::load_average();
      write_report(rep, o.out);  // after each, so that a run cut short leaves what it measured
    }
  }
  std::fputs(report_table(rep).c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace peer

int main(int argc, char** argv) {
  // libgomp and OpenBLAS read these once, at load; both sides share them. ACTIVE unless set:
  // ggml waits at an OpenMP barrier after every graph node, and a passive wait (moe.cpp's CLI
  // default) puts the threads to sleep there, doubling the graph's time at T = 1; llama.cpp keeps
  // libgomp's spinning default.
  bool again = false;
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
    again = true;
  }
  if (!std::getenv("OPENBLAS_CORETYPE"))
    if (const char* core = moe::blas_coretype_override()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      again = true;
    }
  if (again) execv("/proc/self/exe", argv);
  try {
    return peer::peer_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llamacpp_peer: error: %s\n", e.what());
    return 1;
  }
}
