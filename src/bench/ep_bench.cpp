#include "bench/ep_bench.h"

#include <algorithm>
#include <random>

#include <nlohmann/json.hpp>

#include "bench/machine.h"
#include "core/error.h"
#include "dist/placement.h"
#include "model/checkpoint_write.h"
#include "model/weights.h"
#include "moe/moe_layer.h"
#include "ops/backend.h"

namespace moe {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Random weights of one layer: the router (E, D) and shared expert in fp32, and this rank's
// experts as `type` (a matrix whose input is not whole blocks stays fp32). Storage in *store.
struct EpLayer {
  std::vector<std::vector<uint8_t>> store;
  std::vector<std::vector<float>> fstore;
  LayerWeights lw;
};

const float* random_f32(EpLayer* L, int64_t rows, int64_t cols, uint64_t seed, uint64_t key) {
  L->fstore.emplace_back(static_cast<size_t>(rows * cols));
  float* p = L->fstore.back().data();
  for (int64_t r = 0; r < rows; ++r) random_normal_row(seed, key, r, p + r * cols, cols);
  return p;
}

void random_matrix(EpLayer* L, QType t, int64_t rows, int64_t cols, uint64_t seed, uint64_t key,
                   const float** f, QWeight* q) {
  if (t == QT_F32 || (qtype_is_block(t) && cols % kQBlock)) {
    *f = random_f32(L, rows, cols, seed, key);
    return;
  }
  const int64_t rb = qtype_row_bytes(t, cols);
  L->store.emplace_back(static_cast<size_t>(rows * rb));
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    random_normal_row(seed, key, r, row.data(), cols);
    quantize_row(t, row.data(), L->store.back().data() + r * rb, cols);
  }
  *q = QWeight{t, L->store.back().data(), rb};
}

void build(const ModelConfig& c, QType t, uint64_t seed, int e0, int e1, EpLayer* L) {
  const int D = c.hidden, F = c.expert_ffn, E = c.n_experts, S = c.shared_ffn;
  L->lw.router = Linear{random_f32(L, E, D, seed, 1), nullptr, E, D};
  L->lw.experts.assign(E, ExpertWeights());
  for (int e = e0; e < e1; ++e) {
    ExpertWeights& x = L->lw.experts[e];
    const uint64_t k = (static_cast<uint64_t>(e) + 1) << 8;
    random_matrix(L, t, F, D, seed, k + 1, &x.gate, &x.gate_q);
    random_matrix(L, t, F, D, seed, k + 2, &x.up, &x.up_q);
    random_matrix(L, t, D, F, seed, k + 3, &x.down, &x.down_q);
  }
  if (S > 0) {
    L->lw.shared.gate = Linear{random_f32(L, S, D, seed, 2), nullptr, S, D};
    L->lw.shared.up = Linear{random_f32(L, S, D, seed, 3), nullptr, S, D};
    L->lw.shared.down = Linear{random_f32(L, D, S, seed, 4), nullptr, D, S};
    if (c.shared_gate) L->lw.shared_gate = Linear{random_f32(L, 1, D, seed, 5), nullptr, 1, D};
  }
}

// One case: T tokens per rank, calls interleaved with the plain exchange of the same sizes.
EpBenchCase run_case(const ModelConfig& c, const EpLayer& L, MoeState* s, Comm& comm, int T,
                     const EpBenchOptions& o) {
  const int D = c.hidden, P = comm.size();
  std::vector<float> x(static_cast<size_t>(T) * D), out(x.size());
  std::mt19937 gen(static_cast<uint32_t>(o.seed * 7919 + comm.rank()));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : x) v = nd(gen);
  EpDispatcher& d = *s->ep_dispatcher;
  std::vector<double> layer, a2a, a2a_max, plain, ex, wait, plain_d;
  std::vector<uint8_t> sbuf, rbuf;
  EpBenchCase k;
  k.tokens = T;
  for (int rep = 0; rep < o.reps + 3; ++rep) {
    comm.barrier();
    d.reset_comm_seconds();
    double t0 = now_s();
    moe_layer_forward(out.data(), s, c, L.lw, x.data(), T, MoeCall());
    // The exchanges' time on the rank that spent the least in them (the others also wait there
    // for the slowest rank's experts), and on the one that spent the most.
    const double tl = comm_max(comm, now_s() - t0), ta = -comm_max(comm, -d.comm_seconds());
    const double tam = comm_max(comm, d.comm_seconds());
    const double tw = comm_max(comm, d.wait_seconds());
    // The same rows through the grouped FFN alone (inputs as dispatched).
    t0 = now_s();
    backend().experts(&s->ex, expert_ffn_spec(c), L.lw.experts.data(), s->seg, false);
    const double te = comm_max(comm, now_s() - t0);
    // A plain all-to-all-v of the dispatch's sizes, then of the combine's (the reverse).
    const std::vector<int64_t>& sb = d.send_bytes();
    const std::vector<int64_t>& rb = d.recv_bytes();
    int64_t ns = 0, nr = 0;
    for (int q = 0; q < P; ++q) ns += sb[q], nr += rb[q];
    sbuf.resize(std::max<int64_t>(ns, nr) + 1);
    rbuf.resize(std::max<int64_t>(ns, nr) + 1);
    comm.barrier();
    t0 = now_s();
    comm.alltoallv(sbuf.data(), sb.data(), rbuf.data(), rb.data());
    const double tpd = comm_max(comm, now_s() - t0);
    t0 = now_s();
    comm.alltoallv(rbuf.data(), rb.data(), sbuf.data(), sb.data());
    const double tp = tpd + comm_max(comm, now_s() - t0);
    if (rep < 3) continue;
    layer.push_back(tl);
    a2a.push_back(ta);
    a2a_max.push_back(tam);
    plain.push_back(tp);
    ex.push_back(te);
    wait.push_back(tw);
    plain_d.push_back(tpd);
    if (rep == 3) {
      const double sent = comm_sum(comm, static_cast<double>(d.bytes_sent()));
      k.sent_bytes_per_token = sent / (static_cast<double>(T) * P);
      const int64_t rows = d.rows_received();
      k.mean_rows = comm_sum(comm, rows) / P;
      k.max_rows = static_cast<int64_t>(comm_max(comm, static_cast<double>(rows)));
    }
  }
  k.layer_s = median(layer);
  k.a2a_s = median(a2a);
  k.a2a_max_s = median(a2a_max);
  k.plain_s = median(plain);
  k.experts_s = median(ex);
  k.wait_s = median(wait);
  k.plain_dispatch_s = median(plain_d);
  k.hidden = k.plain_dispatch_s > 0 ? std::clamp(1.0 - k.wait_s / k.plain_dispatch_s, 0.0, 1.0) : 0.0;
  k.formula_bytes_per_token = static_cast<double>(c.top_k) * (P - 1) / P * D * sizeof(float);
  return k;
}

}  // namespace

EpBenchResult ep_bench_run(const ModelConfig& c, const std::string& model, Comm& comm,
                           const EpBenchOptions& o) {
  if (c.n_experts <= 0 || c.top_k <= 0) fail("moe bench ep: %s has no routed experts", model.c_str());
  if (o.tokens.empty()) fail("moe bench ep: no token counts");
  EpBenchResult r;
  r.model = model;
  r.type = o.type;
  r.P = comm.size();
  r.D = c.hidden;
  r.F = c.expert_ffn;
  r.E = c.n_experts;
  r.K = c.top_k;
  r.S = c.shared_ffn;
  EpLayer L;
  build(c, o.type, o.seed, ep_expert_begin(c.n_experts, r.P, comm.rank()),
        ep_expert_begin(c.n_experts, r.P, comm.rank() + 1), &L);
  const int T_max = *std::max_element(o.tokens.begin(), o.tokens.end());
  MoeState s;
  moe_state_init(&s, c, T_max, false);
  moe_state_enable_ep(&s, c, &comm, false);
  if (!s.ep_dispatcher) fail("moe bench ep: run it under mpirun with at least 2 processes");
  for (int T : o.tokens) r.cases.push_back(run_case(c, L, &s, comm, T, o));
  return r;
}

std::string ep_bench_markdown(const EpBenchResult& r) {
  std::string s = strfmt(
      "## %s, %s experts, %d ranks\n\nD %d, F %d, %d experts top-%d, shared %d. Times: medians "
      "of the slowest rank per call. All-to-all: the dispatcher's count and row exchanges inside "
      "the layer (dispatch + combine) on the rank that spent the least in them, and the most "
      "(which includes waiting for the slowest rank's experts); plain: two MPI_Alltoallv of the "
      "same sizes after a barrier. ratio = all-to-all (least) / plain.\n\n"
      "| tokens/rank | layer µs | all-to-all µs (least / most) | plain alltoallv µs | ratio | "
      "experts µs | "
      "dispatch hidden | sent B/token | formula B/token | rows max/mean |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n",
      r.model.c_str(), qtype_name(r.type), r.P, r.D, r.F, r.E, r.K, r.S);
  for (const EpBenchCase& k : r.cases)
    s += strfmt("| %d | %.0f | %.0f / %.0f | %.0f | %.2f | %.0f | %s | %.0f | %.0f | %.2f |\n",
                k.tokens, 1e6 * k.layer_s, 1e6 * k.a2a_s, 1e6 * k.a2a_max_s, 1e6 * k.plain_s,
                k.plain_s > 0 ? k.a2a_s / k.plain_s : 0.0, 1e6 * k.experts_s,
                r.S > 0 ? strfmt("%.0f%%", 100.0 * k.hidden).c_str() : "no shared expert",
                k.sent_bytes_per_token, k.formula_bytes_per_token,
                k.mean_rows ? static_cast<double>(k.max_rows) / k.mean_rows : 0.0);
  return s;
}

std::string ep_bench_json(const EpBenchResult& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model;
  j["type"] = qtype_name(r.type);
  j["ranks"] = r.P;
  j["D"] = r.D;
  j["F"] = r.F;
  j["E"] = r.E;
  j["K"] = r.K;
  j["shared_ffn"] = r.S;
  j["cases"] = nlohmann::ordered_json::array();
  for (const EpBenchCase& k : r.cases)
    j["cases"].push_back({{"tokens_per_rank", k.tokens}, {"layer_us", 1e6 * k.layer_s},
                          {"a2a_us", 1e6 * k.a2a_s}, {"a2a_max_us", 1e6 * k.a2a_max_s}, {"plain_alltoallv_us", 1e6 * k.plain_s},
                          {"experts_us", 1e6 * k.experts_s}, {"wait_us", 1e6 * k.wait_s},
                          {"plain_dispatch_us", 1e6 * k.plain_dispatch_s},
                          {"dispatch_hidden", k.hidden},
                          {"sent_bytes_per_token", k.sent_bytes_per_token},
                          {"formula_bytes_per_token", k.formula_bytes_per_token},
                          {"rows_max", k.max_rows}, {"rows_mean", k.mean_rows}});
  return j.dump(2) + "\n";
}

}  // namespace moe
