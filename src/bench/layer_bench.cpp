#include "bench/layer_bench.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/checkpoint_write.h"
#include "model/weights.h"
#include "moe/moe_layer.h"
#include "ops/router.h"

namespace moe {

namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buf = std::unique_ptr<uint8_t[], FreeDeleter>;

Buf alloc_buf(int64_t n) {
  const size_t sz = static_cast<size_t>((std::max<int64_t>(n, 1) + 4095) / 4096 * 4096);
  Buf b(static_cast<uint8_t*>(std::aligned_alloc(4096, sz)));
  if (!b) fail("layer bench: cannot allocate %s", human_bytes(n).c_str());
  return b;
}

// One matrix (or vector: rows = 1) inside a block of memory, `type` rows of `cols` values.
struct Mat {
  int64_t off = -1;  // -1: absent
  int64_t rows = 0, cols = 0;
  QType type = QT_F32;
  int64_t bytes() const { return off < 0 ? 0 : rows * qtype_row_bytes(type, cols); }
  bool block() const { return off >= 0 && qtype_is_block(type); }
};

// Matrices appended at 64-byte-aligned offsets; `read` counts their bytes without padding.
struct Layout {
  int64_t size = 0, read = 0;
  Mat add(int64_t rows, int64_t cols, QType t) {
    Mat m{size, rows, cols, t};
    read += m.bytes();
    size = (size + m.bytes() + 63) / 64 * 64;
    return m;
  }
};

// One routed expert: gate, up (F, D), down (D, F), biases (gpt-oss).
struct ExpertLayout {
  Layout l;
  Mat gate, up, down, gate_b, up_b, down_b;
};

// Router (E, D) with its biases, shared expert (Fs, D) x 2 and (D, Fs), shared gate (1, D).
struct DenseLayout {
  Layout l;
  Mat router, router_b, e_bias, sh_gate, sh_up, sh_down, sh_gw;
};

QType stored_type(QType t, int64_t cols) {
  return qtype_is_block(t) && cols % kQBlock != 0 ? QT_F32 : t;
}

ExpertLayout expert_layout(const ModelConfig& c, QType t) {
  const int64_t D = c.hidden, F = c.expert_ffn;
  ExpertLayout e;
  e.gate = e.l.add(F, D, stored_type(t, D));
  e.up = e.l.add(F, D, stored_type(t, D));
  e.down = e.l.add(D, F, stored_type(t, F));
  if (c.expert_bias) {
    e.gate_b = e.l.add(1, F, QT_F32);
    e.up_b = e.l.add(1, F, QT_F32);
    e.down_b = e.l.add(1, D, QT_F32);
  }
  return e;
}

DenseLayout dense_layout(const ModelConfig& c) {
  const int64_t D = c.hidden, E = c.n_experts, Fs = c.shared_ffn;
  DenseLayout d;
  d.router = d.l.add(E, D, QT_F32);
  if (c.router.has_bias) d.router_b = d.l.add(1, E, QT_F32);
  if (c.router.has_correction_bias) d.e_bias = d.l.add(1, E, QT_F32);
  if (Fs > 0) {
    d.sh_gate = d.l.add(Fs, D, QT_F32);
    d.sh_up = d.l.add(Fs, D, QT_F32);
    d.sh_down = d.l.add(D, Fs, QT_F32);
    if (c.shared_gate) d.sh_gw = d.l.add(1, D, QT_F32);
  }
  return d;
}

const float* fptr(const uint8_t* base, const Mat& m) {
  return m.off < 0 ? nullptr : reinterpret_cast<const float*>(base + m.off);
}

void bind_matrix(const uint8_t* base, const Mat& m, const float** w, QWeight* q) {
  *w = nullptr;
  *q = QWeight();
  if (m.type == QT_F32) {
    *w = fptr(base, m);
    return;
  }
  q->type = m.type;
  q->data = base + m.off;
  q->stride = qtype_row_bytes(m.type, m.cols);
}

ExpertWeights bind_expert(const ExpertLayout& L, const uint8_t* base) {
  ExpertWeights ew;
  bind_matrix(base, L.gate, &ew.gate, &ew.gate_q);
  bind_matrix(base, L.up, &ew.up, &ew.up_q);
  bind_matrix(base, L.down, &ew.down, &ew.down_q);
  ew.gate_b = fptr(base, L.gate_b);
  ew.up_b = fptr(base, L.up_b);
  ew.down_b = fptr(base, L.down_b);
  return ew;
}

void bind_dense(const ModelConfig& c, const DenseLayout& L, const uint8_t* base, LayerWeights* lw) {
  const int D = c.hidden, E = c.n_experts, Fs = c.shared_ffn;
  lw->router = {fptr(base, L.router), fptr(base, L.router_b), E, D};
  lw->e_bias = fptr(base, L.e_bias);
  if (Fs > 0) {
    lw->shared.gate = {fptr(base, L.sh_gate), nullptr, Fs, D};
    lw->shared.up = {fptr(base, L.sh_up), nullptr, Fs, D};
    lw->shared.down = {fptr(base, L.sh_down), nullptr, D, Fs};
    if (c.shared_gate) lw->shared_gate = {fptr(base, L.sh_gw), nullptr, 1, D};
  }
}

// Fills m with N(0, 0.02) values keyed on (seed, key), stored as its type.
void fill_random(uint8_t* base, const Mat& m, uint64_t seed, uint64_t key) {
  if (m.off < 0) return;
  const int64_t rb = qtype_row_bytes(m.type, m.cols);
#pragma omp parallel
  {
    std::vector<float> row(m.cols);  // (cols)
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m.rows; ++r) {
      random_normal_row(seed, key, r, row.data(), m.cols);
      quantize_row(m.type, row.data(), base + m.off + r * rb, m.cols);
    }
  }
}

// Row r of m as fp32.
void mat_row(const uint8_t* base, const Mat& m, int64_t r, float* dst) {
  const int64_t rb = qtype_row_bytes(m.type, m.cols);
  const uint8_t* p = base + m.off + r * rb;
  if (m.type == QT_F32) std::memcpy(dst, p, static_cast<size_t>(rb));
  else dequantize_row(m.type, p, dst, m.cols);
}

// The layer: all E experts in one block (expert e at e * stride), router and shared in another.
struct BenchLayer {
  ExpertLayout el;
  DenseLayout dl;
  Buf experts, dense;
  LayerWeights lw;
  bool raw = false;  // some expert matrix is raw (BF16 / Q8_0 / Q4_0)
};

void build_layer(const ModelConfig& c, QType t, uint64_t seed, BenchLayer* L) {
  const int E = c.n_experts;
  L->el = expert_layout(c, t);
  L->dl = dense_layout(c);
  L->raw = L->el.gate.type != QT_F32 || L->el.up.type != QT_F32 || L->el.down.type != QT_F32;
  L->experts = alloc_buf(E * L->el.l.size);
  L->dense = alloc_buf(L->dl.l.size);
  const ExpertLayout& el = L->el;
  for (int e = 0; e < E; ++e) {
    uint8_t* base = L->experts.get() + e * el.l.size;
    const uint64_t k = (static_cast<uint64_t>(e) + 1) << 8;
    fill_random(base, el.gate, seed, k + 1);
    fill_random(base, el.up, seed, k + 2);
    fill_random(base, el.down, seed, k + 3);
    fill_random(base, el.gate_b, seed, k + 4);
    fill_random(base, el.up_b, seed, k + 5);
    fill_random(base, el.down_b, seed, k + 6);
  }
  const DenseLayout& dl = L->dl;
  uint8_t* d = L->dense.get();
  const Mat* dense[] = {&dl.router, &dl.router_b, &dl.e_bias, &dl.sh_gate,
                        &dl.sh_up,  &dl.sh_down,  &dl.sh_gw};
  for (int i = 0; i < 7; ++i) fill_random(d, *dense[i], seed, 0xd000 + i);
  L->lw = LayerWeights();
  bind_dense(c, dl, d, &L->lw);
  L->lw.experts.resize(E);
  for (int e = 0; e < E; ++e) L->lw.experts[e] = bind_expert(el, L->experts.get() + e * el.l.size);
}

// --- reference ----------------------------------------------------------------------------

struct Asg {
  int tok = 0, e = 0;
  float w = 0.0f;
};

// The (token, expert, weight) assignments of the last moe_forward call on T tokens.
std::vector<Asg> assignments_of(const ModelConfig& c, const FfnScratch& s, int T) {
  std::vector<Asg> as;
  if (c.router.kind == ROUTER_EXPERT_CHOICE) {
    const Routing& r = s.routing;
    for (int a = 0; a < r.A; ++a) as.push_back({r.tok[a], r.expert[a], r.w[a]});
    return as;
  }
  const int K = c.top_k;
  for (int a = 0; a < T * K; ++a) as.push_back({a / K, s.idx[a], s.w[a]});
  return as;
}

double act_ref(const ModelConfig& c, double g, double u) {
  if (c.act == ACT_SWIGLU) return g / (1.0 + std::exp(-g)) * u;
  const double lim = c.act_limit, alpha = c.act_alpha;
  const double gv = std::min(g, lim), uv = std::clamp(u, -lim, lim);
  return (uv + 1.0) * (gv / (1.0 + std::exp(-alpha * gv)));
}

// y = x rounded to Q8_0 and back (what the dot kernels see of an activation row).
void q8_round(const float* x, float* y, int64_t n) {
  std::vector<uint8_t> q(static_cast<size_t>(qtype_row_bytes(QT_Q8_0, n)));
  quantize_row_q8_0(x, q.data(), n);
  dequantize_row_q8_0(q.data(), y, n);
}

// One SwiGLU-type MLP applied to n input rows in double: rows xin[j] (D) for gate/up inputs,
// h = act(gate x + gb, up x + ub), y[j] = down h + db. gate/up take xg/xu (per-matrix inputs:
// plain or Q8_0-rounded), down takes h rounded to Q8_0 if round_h. act: routed-expert activation,
// or plain SwiGLU (shared experts) when c is null.
struct MlpRef {
  const uint8_t* base;
  Mat gate, up, down, gb, ub, db;
};

void mlp_ref(const ModelConfig* c, const MlpRef& m, const std::vector<const float*>& xg,
             const std::vector<const float*>& xu, bool round_h, std::vector<double>* y) {
  const int64_t n = static_cast<int64_t>(xg.size());
  const int64_t F = m.gate.rows, D = m.gate.cols;
  std::vector<double> g(n * F), u(n * F);
#pragma omp parallel
  {
    std::vector<float> wg(D), wu(D);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < F; ++r) {
      mat_row(m.base, m.gate, r, wg.data());
      mat_row(m.base, m.up, r, wu.data());
      for (int64_t j = 0; j < n; ++j) {
        double sg = m.gb.off >= 0 ? fptr(m.base, m.gb)[r] : 0.0;
        double su = m.ub.off >= 0 ? fptr(m.base, m.ub)[r] : 0.0;
        for (int64_t d = 0; d < D; ++d) {
          sg += static_cast<double>(wg[d]) * xg[j][d];
          su += static_cast<double>(wu[d]) * xu[j][d];
        }
        g[j * F + r] = sg;
        u[j * F + r] = su;
      }
    }
  }
  std::vector<double> h(n * F);
  std::vector<float> hf(F), hr(F);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < F; ++i) {
      const double gi = g[j * F + i], ui = u[j * F + i];
      h[j * F + i] = c ? act_ref(*c, gi, ui) : gi / (1.0 + std::exp(-gi)) * ui;
    }
    if (!round_h) continue;
    for (int64_t i = 0; i < F; ++i) hf[i] = static_cast<float>(h[j * F + i]);
    q8_round(hf.data(), hr.data(), F);
    for (int64_t i = 0; i < F; ++i) h[j * F + i] = hr[i];
  }
  y->assign(n * D, 0.0);
#pragma omp parallel
  {
    std::vector<float> wd(F);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < D; ++r) {
      mat_row(m.base, m.down, r, wd.data());
      for (int64_t j = 0; j < n; ++j) {
        double s = m.db.off >= 0 ? fptr(m.base, m.db)[r] : 0.0;
        for (int64_t k = 0; k < F; ++k) s += static_cast<double>(wd[k]) * h[j * F + k];
        (*y)[j * D + r] = s;
      }
    }
  }
}

// ref (T, D): the layer's output in double for the given assignments; q8 = true rounds the
// inputs of block-type expert matrices to Q8_0 as the dot kernels do.
std::vector<double> reference(const ModelConfig& c, const BenchLayer& L, const float* x, int T,
                              const std::vector<Asg>& as, bool q8) {
  const int D = c.hidden, E = c.n_experts;
  std::vector<double> ref(static_cast<size_t>(T) * D, 0.0);
  std::vector<float> xq(static_cast<size_t>(T) * D);
  for (int t = 0; t < T; ++t) {
    const float* xt = x + static_cast<int64_t>(t) * D;
    if (D % kQBlock == 0) q8_round(xt, xq.data() + static_cast<int64_t>(t) * D, D);
    else std::copy(xt, xt + D, xq.data() + static_cast<int64_t>(t) * D);
  }
  const ExpertLayout& el = L.el;
  for (int e = 0; e < E; ++e) {
    std::vector<const Asg*> mine;
    for (const Asg& a : as)
      if (a.e == e) mine.push_back(&a);
    if (mine.empty()) continue;
    const MlpRef m{L.experts.get() + e * el.l.size, el.gate, el.up, el.down, el.gate_b, el.up_b,
                   el.down_b};
    std::vector<const float*> xg, xu;
    for (const Asg* a : mine) {
      const int64_t o = static_cast<int64_t>(a->tok) * D;
      xg.push_back((q8 && el.gate.block() ? xq.data() : x) + o);
      xu.push_back((q8 && el.up.block() ? xq.data() : x) + o);
    }
    std::vector<double> y;
    mlp_ref(&c, m, xg, xu, q8 && el.down.block(), &y);
    for (size_t j = 0; j < mine.size(); ++j)
      for (int i = 0; i < D; ++i)
        ref[static_cast<size_t>(mine[j]->tok) * D + i] += mine[j]->w * y[j * D + i];
  }
  if (c.shared_ffn > 0) {
    const DenseLayout& dl = L.dl;
    const MlpRef m{L.dense.get(), dl.sh_gate, dl.sh_up, dl.sh_down, {}, {}, {}};
    std::vector<const float*> xs;
    for (int t = 0; t < T; ++t) xs.push_back(x + static_cast<int64_t>(t) * D);
    std::vector<double> y;
    mlp_ref(nullptr, m, xs, xs, false, &y);
    for (int t = 0; t < T; ++t) {
      double gate = 1.0;
      if (c.shared_gate) {
        double s = 0.0;
        const float* w = fptr(L.dense.get(), dl.sh_gw);
        for (int i = 0; i < D; ++i) s += static_cast<double>(w[i]) * xs[t][i];
        gate = 1.0 / (1.0 + std::exp(-s));
      }
      for (int i = 0; i < D; ++i)
        ref[static_cast<size_t>(t) * D + i] += gate * y[static_cast<size_t>(t) * D + i];
    }
  }
  return ref;
}

double rel_err(const float* y, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = y[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Token choice: the top-K of router logits computed in double must match moe_forward's choice.
void check_routing(const ModelConfig& c, const BenchLayer& L, const float* x, int T,
                   const FfnScratch& s) {
  const int D = c.hidden, E = c.n_experts, K = c.top_k;
  const DenseLayout& dl = L.dl;
  const float* wr = fptr(L.dense.get(), dl.router);
  const float* br = fptr(L.dense.get(), dl.router_b);
  std::vector<float> lg(static_cast<size_t>(T) * E);
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) {
      double v = br ? br[e] : 0.0;
      for (int i = 0; i < D; ++i)
        v += static_cast<double>(wr[static_cast<int64_t>(e) * D + i]) * x[static_cast<int64_t>(t) * D + i];
      lg[static_cast<size_t>(t) * E + e] = static_cast<float>(v);
    }
  Routing rt;
  routing_init(&rt, T, E, K);
  router_forward(&rt, c.router, lg.data(), fptr(L.dense.get(), dl.e_bias), nullptr, nullptr, T,
                 0.0f, 0, false);
  const float* w = rt.w.data();
  const int32_t* idx = rt.expert.data();
  for (int a = 0; a < T * K; ++a) {
    if (idx[a] != s.idx[a])
      fail("layer bench: routing check: token %d, choice %d: moe_forward chose expert %d, the "
           "double-precision router expert %d",
           a / K, a % K, s.idx[a], idx[a]);
    if (std::fabs(w[a] - s.w[a]) > 1e-5f * (1.0f + std::fabs(w[a])))
      fail("layer bench: routing check: token %d, expert %d: weight %g, double-precision router %g",
           a / K, idx[a], s.w[a], w[a]);
  }
}

// --- timing --------------------------------------------------------------------------------

// Weights for one call: the layer's own (buf null) or a copy of the dense block and the experts
// in `touched`.
struct Slot {
  Buf buf;
  LayerWeights lw;
};

std::vector<Slot> make_slots(const ModelConfig& c, const BenchLayer& L,
                             const std::vector<int>& touched, int n) {
  std::vector<Slot> slots(n);
  slots[0].lw = L.lw;
  const int64_t ds = L.dl.l.size, es = L.el.l.size;
  for (int i = 1; i < n; ++i) {
    Slot& s = slots[i];
    s.buf = alloc_buf(ds + static_cast<int64_t>(touched.size()) * es);
    uint8_t* p = s.buf.get();
    std::memcpy(p, L.dense.get(), static_cast<size_t>(ds));
    s.lw = L.lw;
    bind_dense(c, L.dl, p, &s.lw);
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < touched.size(); ++j) {
      uint8_t* dst = p + ds + static_cast<int64_t>(j) * es;
      std::memcpy(dst, L.experts.get() + touched[j] * es, static_cast<size_t>(es));
    }
    for (size_t j = 0; j < touched.size(); ++j)
      s.lw.experts[touched[j]] = bind_expert(L.el, p + ds + static_cast<int64_t>(j) * es);
  }
  return slots;
}

std::string pct(double f) { return strfmt("%.0f%%", 100.0 * f); }

// What the phases of one layer bench share.
struct LayerRun {
  const ModelConfig* c = nullptr;
  const LayerBenchOptions* opt = nullptr;
  std::string model;
  BenchLayer L;
  FfnScratch s;
  std::vector<float> X;      // (T_max, D) inputs, N(0, 1)
  std::vector<float> out;    // (T_max, D)
  std::vector<int32_t> ids;  // (T_max) token ids (hash routing)
  uint64_t route_seed = 0;
  void log(const std::string& m) const {
    if (opt->log) opt->log(m);
  }
};

// Checks the options and fills the result's description of the layer and the machine.
void layer_bench_describe(const ModelConfig& c, const std::string& model,
                          const std::string& config_path, const LayerBenchOptions& opt,
                          LayerBenchResult* r) {
  if (c.n_experts <= 0 || c.top_k <= 0 || c.expert_ffn <= 0 || c.n_moe_layers() == 0)
    fail("%s: the model has no MoE layer (routed experts) to benchmark", config_path.c_str());
  if (opt.tokens.empty()) fail("layer bench: no token counts");
  for (int T : opt.tokens)
    if (T <= 0) fail("layer bench: token count %d must be positive", T);
  if (opt.validate_tokens <= 0) fail("layer bench: validate_tokens must be positive");
  r->model = model;
  r->config_path = config_path;
  r->type = opt.type;
  r->D = c.hidden;
  r->F = c.expert_ffn;
  r->E = c.n_experts;
  r->K = c.top_k;
  r->Fs = c.shared_ffn;
  r->shared_gate = c.shared_gate;
  r->expert_bias = c.expert_bias;
  r->router_bias = c.router.has_bias;
  r->act = c.act == ACT_SWIGLU ? "swiglu" : "swiglu_oai";
  r->router = router_kind_name(c.router.kind);
  r->quick = opt.quick;
  r->machine = machine_info();
}

// Builds the layer's weights (refusing what does not fit in memory) and the inputs.
void layer_bench_build(LayerRun* run, LayerBenchResult* r) {
  const ModelConfig& c = *run->c;
  const LayerBenchOptions& opt = *run->opt;
  const int D = c.hidden, E = c.n_experts;
  const int layer =
      static_cast<int>(std::find(c.is_moe.begin(), c.is_moe.end(), 1) - c.is_moe.begin());
  run->route_seed = router_layer_seed(0, layer);
  const ExpertLayout el = expert_layout(c, opt.type);
  const DenseLayout dl = dense_layout(c);
  r->expert_bytes = el.l.read;
  r->dense_bytes = dl.l.read;
  r->layer_bytes = E * el.l.read + dl.l.read;
  const int64_t need = E * el.l.size + dl.l.size;
  if (need > r->machine.mem_available * 85 / 100)
    fail("layer bench: one %s layer of %s takes %s, but only %s of memory is available",
         qtype_name(opt.type), run->model.c_str(), human_bytes(need).c_str(),
         human_bytes(r->machine.mem_available).c_str());
  run->log(strfmt("building one %s layer of %s: %d experts of %s, router + shared %s (%s)",
                  qtype_name(opt.type), run->model.c_str(), E, human_bytes(el.l.read).c_str(),
                  human_bytes(dl.l.read).c_str(), human_bytes(need).c_str()));
  build_layer(c, opt.type, opt.seed, &run->L);
  const int T_max =
      std::max(opt.validate_tokens, *std::max_element(opt.tokens.begin(), opt.tokens.end()));
  ffn_scratch_init(&run->s, c, T_max);
  run->X.assign(static_cast<size_t>(T_max) * D, 0.0f);
  run->out.assign(static_cast<size_t>(T_max) * D, 0.0f);
  for (int t = 0; t < T_max; ++t) {
    float* xt = run->X.data() + static_cast<int64_t>(t) * D;
    random_normal_row(opt.seed, 0xa11ce, t, xt, D);
    for (int i = 0; i < D; ++i) xt[i] *= 50.0f;  // N(0, 1)
  }
  run->ids.resize(T_max);
  for (int t = 0; t < T_max; ++t) run->ids[t] = c.vocab > 0 ? t % c.vocab : 0;
}

// Validates moe_forward (dot path, and the gemm path for raw weights) against the double
// reference before anything is timed; fails on a mismatch.
void layer_bench_validate(LayerRun* run, LayerBenchResult* r) {
  const ModelConfig& c = *run->c;
  const LayerBenchOptions& opt = *run->opt;
  FfnScratch& s = run->s;
  const int Tv = opt.validate_tokens;
  run->log(strfmt("validating %d tokens against the double-precision reference", Tv));
  moe_forward(run->out.data(), c, run->L.lw, run->X.data(), Tv, &s, run->ids.data(), 0,
              run->route_seed);
  const std::vector<Asg> as = assignments_of(c, s, Tv);
  const bool token_choice = c.router.kind == ROUTER_TOKEN_CHOICE;
  if (token_choice) check_routing(c, run->L, run->X.data(), Tv, s);
  const std::vector<double> ref = reference(c, run->L, run->X.data(), Tv, as, false);
  const bool block = qtype_is_block(opt.type);
  LayerCheck dot;
  dot.path = "dot";
  dot.tokens = Tv;
  dot.routing_checked = token_choice;
  dot.rel_err = rel_err(run->out.data(), ref);
  dot.tol = block ? 0.05 : 1e-4;
  dot.ok = dot.rel_err <= dot.tol;
  if (block) {
    dot.rel_err_q8 = rel_err(run->out.data(), reference(c, run->L, run->X.data(), Tv, as, true));
    dot.tol_q8 = 3e-3;
    dot.ok = dot.ok && dot.rel_err_q8 <= dot.tol_q8;
  }
  r->checks.push_back(dot);
  if (run->L.raw) {
    const int keep_q = s.ex.quant_dot_max_tokens, keep_bf16 = s.ex.bf16_dot_max_tokens;
    ffn_set_dot_max_tokens(&s, 0);
    moe_forward(run->out.data(), c, run->L.lw, run->X.data(), Tv, &s, run->ids.data(), 0,
                run->route_seed);
    s.ex.quant_dot_max_tokens = keep_q;
    s.ex.bf16_dot_max_tokens = keep_bf16;
    LayerCheck gemm;
    gemm.path = "gemm";
    gemm.tokens = Tv;
    gemm.routing_checked = token_choice;
    gemm.rel_err = rel_err(run->out.data(), ref);
    gemm.tol = 1e-4;
    gemm.ok = gemm.rel_err <= gemm.tol;
    r->checks.push_back(gemm);
  }
  for (const LayerCheck& ck : r->checks) {
    const std::string q8 =
        ck.rel_err_q8 >= 0 ? strfmt(", %.3g against Q8_0-rounded activations (tolerance %.3g)",
                                    ck.rel_err_q8, ck.tol_q8)
                           : "";
    run->log(strfmt("  %s path: relative error %.3g (tolerance %.3g)%s", ck.path.c_str(),
                    ck.rel_err, ck.tol, q8.c_str()));
    if (!ck.ok)
      fail("layer bench: %s: moe_forward's %s path differs from the reference: relative error "
           "%.3g (tolerance %.3g)%s",
           run->model.c_str(), ck.path.c_str(), ck.rel_err, ck.tol, q8.c_str());
  }
}

// The machine's limits: DRAM read bandwidth and sgemm throughput.
void layer_bench_limits(const LayerRun& run, LayerBenchResult* r) {
  const LayerBenchOptions& opt = *run.opt;
  const int64_t bw_bytes =
      opt.bw_bytes > 0 ? opt.bw_bytes : default_bandwidth_bytes(r->machine.llc_bytes);
  run.log(strfmt("measuring DRAM read bandwidth (%s, %d threads) and sgemm (n = %d)",
                 human_bytes(bw_bytes).c_str(), r->machine.threads, opt.gemm_n));
  r->bw = measure_read_bandwidth(bw_bytes, opt.bw_reps);
  r->gemm = measure_sgemm(opt.gemm_n, 3);
  run.log(strfmt("  DRAM read %.1f GB/s, sgemm %.1f GFLOP/s", r->bw.best_gbps,
                 r->gemm.best_gflops));
}

// Times T tokens through the layer, cold (weights cycled through copies larger than the cache)
// and warm, and appends one case per mode.
void layer_bench_time(LayerRun* run, int T, LayerBenchResult* r) {
  const ModelConfig& c = *run->c;
  const LayerBenchOptions& opt = *run->opt;
  const BenchLayer& L = run->L;
  FfnScratch& s = run->s;
  const int D = c.hidden, E = c.n_experts;
  const int64_t cold_target = opt.cold_target_bytes > 0
                                  ? opt.cold_target_bytes
                                  : std::max<int64_t>(int64_t{1} << 30, 4 * r->machine.llc_bytes);
  const auto call = [&](const LayerWeights& w) {
    moe_forward(run->out.data(), c, w, run->X.data(), T, &s, run->ids.data(), 0, run->route_seed);
  };
  call(L.lw);  // which experts do these T tokens select?
  std::vector<int> touched;
  int n_dot = 0;
  for (int e = 0; e < E; ++e) {
    const int n = s.plan.off[e + 1] - s.plan.off[e];
    if (n == 0) continue;
    touched.push_back(e);
    const QType t = L.el.gate.type != QT_F32 ? L.el.gate.type : L.el.down.type;
    n_dot += L.raw && n <= ffn_dot_max_tokens(s, t);
  }
  const int64_t A = s.plan.off[E];
  const int64_t Fe = c.expert_ffn, Fs = c.shared_ffn;
  const double flops = 2.0 * static_cast<double>(A) * 3 * D * Fe + 2.0 * T * 3.0 * D * Fs +
                       2.0 * T * D * E + (c.shared_gate ? 2.0 * T * D : 0.0);
  const int64_t bytes = r->dense_bytes + static_cast<int64_t>(touched.size()) * r->expert_bytes;
  for (int mode = 0; mode < 2; ++mode) {
    const bool cold = mode == 0;
    if ((cold && !opt.cold) || (!cold && !opt.warm)) continue;
    int n_slots = 1;
    if (cold) {
      n_slots = static_cast<int>(std::min<int64_t>((cold_target + bytes - 1) / bytes, 1 << 16));
      const int64_t room = std::min<int64_t>(opt.cold_max_bytes, mem_available() / 2);
      n_slots = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_slots, 1 + room / bytes)));
    }
    const std::vector<Slot> slots = cold ? make_slots(c, L, touched, n_slots) : std::vector<Slot>();
    const CpuShare share = cpu_share_start();
    const TimeStats ts = time_calls(
        [&](int i) { call(cold ? slots[i % n_slots].lw : L.lw); }, 1, opt.min_reps,
        opt.max_reps, opt.min_time_s);
    LayerCase k;
    k.cpu = cpu_share_since(share);
    k.tokens = T;
    k.cold = cold;
    k.slots = n_slots;
    k.reuse_bytes = n_slots * bytes;
    k.time = ts;
    k.flops = flops;
    k.bytes = bytes;
    k.experts_touched = static_cast<int>(touched.size());
    k.dot_experts = n_dot;
    k.gflops = flops / ts.median_s / 1e9;
    k.gbps = static_cast<double>(bytes) / ts.median_s / 1e9;
    k.frac_dram = k.gbps / r->bw.best_gbps;
    k.frac_sgemm = k.gflops / r->gemm.best_gflops;
    k.frac_roof = std::max(static_cast<double>(bytes) / (r->bw.best_gbps * 1e9),
                           flops / (r->gemm.best_gflops * 1e9)) /
                  ts.median_s;
    run->log(strfmt("  T=%d %s: %.1f us/call, %.1f GFLOP/s, %.2f GB/s (%s of DRAM, %s of roofline)",
                    T, cold ? "cold" : "warm", ts.median_s * 1e6, k.gflops, k.gbps,
                    pct(k.frac_dram).c_str(), pct(k.frac_roof).c_str()));
    r->cases.push_back(k);
  }
}

}  // namespace

LayerBenchResult layer_bench_run(const ModelConfig& cfg, const std::string& model,
                                 const std::string& config_path, const LayerBenchOptions& opt) {
  LayerBenchResult r;
  layer_bench_describe(cfg, model, config_path, opt, &r);
  const CpuShare run_share = cpu_share_start();
  LayerRun run;
  run.c = &cfg;
  run.opt = &opt;
  run.model = model;
  layer_bench_build(&run, &r);
  layer_bench_validate(&run, &r);
  if (opt.dot_max_tokens >= 0) {
    ffn_set_dot_max_tokens(&run.s, opt.dot_max_tokens);
    run.log(strfmt("segments of at most %d tokens use the dot kernels", opt.dot_max_tokens));
  }
  layer_bench_limits(run, &r);
  for (int T : opt.tokens) layer_bench_time(&run, T, &r);
  r.load_end = load_average();
  r.cpu = cpu_share_since(run_share);
  return r;
}

std::string layer_bench_json(const LayerBenchResult& r) {
  using nlohmann::json;
  json j;
  j["bench"] = "layer";
  j["model"] = r.model;
  j["config"] = r.config_path;
  j["type"] = qtype_name(r.type);
  j["quick"] = r.quick;
  j["layer"] = {{"hidden", r.D},          {"expert_ffn", r.F},       {"experts", r.E},
                {"top_k", r.K},           {"shared_ffn", r.Fs},      {"shared_gate", r.shared_gate},
                {"expert_bias", r.expert_bias}, {"router_bias", r.router_bias},
                {"act", r.act},           {"router", r.router},      {"expert_bytes", r.expert_bytes},
                {"dense_bytes", r.dense_bytes}, {"layer_bytes", r.layer_bytes}};
  j["machine"] = machine_json(r.machine, r.load_end, &r.bw, &r.gemm);
  j["machine"]["other_cpu"] = r.cpu.others;
  j["machine"]["steal"] = r.cpu.steal;
  j["validation"] = json::array();
  for (const LayerCheck& c : r.checks) {
    json v = {{"path", c.path},     {"tokens", c.tokens}, {"rel_err", c.rel_err},
              {"tol", c.tol},       {"ok", c.ok},         {"routing_checked", c.routing_checked}};
    if (c.rel_err_q8 >= 0) {
      v["rel_err_q8act"] = c.rel_err_q8;
      v["tol_q8act"] = c.tol_q8;
    }
    j["validation"].push_back(v);
  }
  j["cases"] = json::array();
  for (const LayerCase& k : r.cases)
    j["cases"].push_back({{"tokens", k.tokens},
                          {"weights", k.cold ? "cold" : "warm"},
                          {"slots", k.slots},
                          {"reuse_bytes", k.reuse_bytes},
                          {"reps", k.time.reps},
                          {"us_median", k.time.median_s * 1e6},
                          {"us_min", k.time.min_s * 1e6},
                          {"us_mean", k.time.mean_s * 1e6},
                          {"flops", k.flops},
                          {"bytes", k.bytes},
                          {"experts_touched", k.experts_touched},
                          {"dot_experts", k.dot_experts},
                          {"gflops", k.gflops},
                          {"gbps", k.gbps},
                          {"frac_dram", k.frac_dram},
                          {"frac_sgemm", k.frac_sgemm},
                          {"frac_roofline", k.frac_roof},
                          {"other_cpu", k.cpu.others},
                          {"steal", k.cpu.steal}});
  return j.dump(2) + "\n";
}

std::string layer_bench_table(const LayerBenchResult& r) {
  std::string t =
      "| T | weights | µs/call | GFLOP/s | GB/s | % DRAM BW | % sgemm | % roofline | experts read "
      "(dot) | bytes/call | reuse distance | reps | others' CPU |\n"
      "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const LayerCase& k : r.cases) {
    const bool short_reuse = k.cold && k.reuse_bytes < 2 * r.machine.llc_bytes;
    t += strfmt("| %d | %s | %.1f | %.1f | %.2f | %s | %s | %s | %d (%d) | %s | %s%s | %d | %s |\n",
                k.tokens, k.cold ? "cold" : "warm", k.time.median_s * 1e6, k.gflops, k.gbps,
                pct(k.frac_dram).c_str(), pct(k.frac_sgemm).c_str(), pct(k.frac_roof).c_str(),
                k.experts_touched, k.dot_experts, human_bytes(k.bytes).c_str(),
                k.cold ? human_bytes(k.reuse_bytes).c_str() : "-", short_reuse ? " (< 2 LLC)" : "",
                k.time.reps, pct(k.cpu.others).c_str());
  }
  return t;
}

std::string layer_bench_markdown(const LayerBenchResult& r) {
  std::string s = strfmt("# MoE layer: %s, %s experts\n\n", r.model.c_str(), qtype_name(r.type));
  if (r.quick) s += "**Quick run (test settings): the numbers are not measurements.**\n\n";
  s += strfmt("`moe bench layer --config %s --type %s` (one layer, random weights, moe_forward).\n\n",
              r.config_path.c_str(), qtype_name(r.type));
  s += strfmt("Layer: D = %d, F = %d, E = %d, K = %d, shared F = %d%s; %s, router %s%s%s. One "
              "expert %s, router + shared %s, whole layer %s.\n\n",
              r.D, r.F, r.E, r.K, r.Fs, r.shared_gate ? " (gated)" : "", r.act.c_str(),
              r.router.c_str(), r.router_bias ? " with bias" : "",
              r.expert_bias ? ", expert biases" : "", human_bytes(r.expert_bytes).c_str(),
              human_bytes(r.dense_bytes).c_str(), human_bytes(r.layer_bytes).c_str());
  s += machine_markdown(r.machine, r.load_end);
  s += strfmt("Other processes used %.0f%% of the CPUs over the run (hypervisor steal %.0f%%).\n\n",
              100.0 * r.cpu.others, 100.0 * r.cpu.steal);
  s += strfmt("Limits, measured in this run: %s; sgemm %.1f GFLOP/s (op_sgemm, n = %d).\n\n",
              bandwidth_markdown(r.bw).c_str(), r.gemm.best_gflops, r.gemm.n);
  s += "Validation against the double-precision reference (relative L2 error):\n\n"
       "| path | tokens | error | tolerance | Q8_0-activation reference | tolerance | routing "
       "checked |\n|---|---:|---:|---:|---:|---:|---|\n";
  for (const LayerCheck& c : r.checks)
    s += strfmt("| %s | %d | %.3g | %.3g | %s | %s | %s |\n", c.path.c_str(), c.tokens, c.rel_err,
                c.tol, c.rel_err_q8 >= 0 ? strfmt("%.3g", c.rel_err_q8).c_str() : "-",
                c.rel_err_q8 >= 0 ? strfmt("%.3g", c.tol_q8).c_str() : "-",
                c.routing_checked ? "yes" : "no");
  s += "\n" + layer_bench_table(r);
  s += "\nµs/call: median. GB/s: bytes a call must read (distinct experts selected + router + "
       "shared) per second. % roofline: max(bytes / DRAM BW, flops / sgemm rate) over the time. "
       "Cold: weight copies in rotation, at least the reuse distance read between two uses of the "
       "same bytes; warm: the same weights every call. Experts read (dot): distinct experts "
       "selected, of which run through the dot kernels (the rest dequantize for sgemm, or are "
       "fp32 BLAS). Others' CPU: share of all CPUs used by other processes while the case was "
       "timed (0% = an otherwise idle machine).\n";
  return s;
}

}  // namespace moe
