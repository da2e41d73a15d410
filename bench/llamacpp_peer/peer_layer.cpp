#include "peer_layer.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "core/error.h"
#include "model/checkpoint_write.h"

namespace peer {

namespace {

[[noreturn]] void die(const std::string& m) { throw std::runtime_error("llamacpp_peer: " + m); }

HostBuf host_alloc(int64_t n) {
  HostBuf b;
  b.n = n;
  b.p.reset(new uint8_t[static_cast<size_t>(std::max<int64_t>(n, 1))]);
  return b;
}

// rows x cols values N(0, 0.02) keyed on (seed, key), stored as type t (rows in parallel).
HostBuf random_matrix(int64_t rows, int64_t cols, moe::QType t, uint64_t seed, uint64_t key) {
  const int64_t rb = moe::qtype_row_bytes(t, cols);
  HostBuf b = host_alloc(rows * rb);
  uint8_t* dst = b.data();
#pragma omp parallel
  {
    std::vector<float> row(cols);  // (cols)
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      moe::random_normal_row(seed, key, r, row.data(), cols);
      moe::quantize_row(t, row.data(), dst + r * rb, cols);
    }
  }
  return b;
}

moe::QWeight raw(const HostBuf& b, int64_t row0, moe::QType t, int64_t cols) {
  const int64_t rb = moe::qtype_row_bytes(t, cols);
  return moe::QWeight{t, b.data() + row0 * rb, rb};
}

const float* fp(const HostBuf& b) { return b.p ? reinterpret_cast<const float*>(b.data()) : nullptr; }

}  // namespace

bool ggml_type_of(moe::QType t, ggml_type* out) {
  switch (t) {
    case moe::QT_F32: *out = GGML_TYPE_F32; return true;
    case moe::QT_BF16: *out = GGML_TYPE_BF16; return true;
    case moe::QT_F16: *out = GGML_TYPE_F16; return true;
    case moe::QT_Q8_0: *out = GGML_TYPE_Q8_0; return true;
    case moe::QT_Q4_0: *out = GGML_TYPE_Q4_0; return true;
    case moe::QT_Q4_K: *out = GGML_TYPE_Q4_K; return true;
    case moe::QT_Q5_K: *out = GGML_TYPE_Q5_K; return true;
    case moe::QT_Q6_K: *out = GGML_TYPE_Q6_K; return true;
    default: return false;
  }
}

PeerSpec peer_spec_of(const moe::ModelConfig& c, int threads) {
  const moe::RouterSpec& r = c.router;
  if (c.n_experts <= 0 || c.top_k <= 0) die(c.path + ": the model has no routed experts");
  if (r.kind != moe::ROUTER_TOKEN_CHOICE) die(c.path + ": router: only token choice is compared");
  if (r.group != moe::GROUP_NONE && r.n_group > 1)
    die(c.path + ": group-limited routing is not built into the peer graph");
  if (c.act != moe::ACT_SWIGLU || c.expert_bias)
    die(c.path + ": only SwiGLU experts without biases are compared");
  PeerSpec s;
  s.D = c.hidden;
  s.F = c.expert_ffn;
  s.E = c.n_experts;
  s.K = c.top_k;
  s.Fs = c.shared_ffn;
  s.gating = r.topk_then_softmax         ? PeerSpec::SOFTMAX_WEIGHT
             : r.score == moe::SCORE_SIGMOID ? PeerSpec::SIGMOID
                                         : PeerSpec::SOFTMAX;
  s.router_bias = r.has_bias;
  s.selection_bias = r.has_correction_bias;
  s.norm_w = r.norm_topk;
  s.w_scale = r.scale;
  s.shared_gate = c.shared_ffn > 0 && c.shared_gate;
  s.threads = threads;
  return s;
}

void host_layer_build(HostLayer* L, const moe::ModelConfig& c, moe::QType t, uint64_t seed) {
  const int D = c.hidden, F = c.expert_ffn, E = c.n_experts, Fs = c.shared_ffn;
  ggml_type gt;
  if (!ggml_type_of(t, &gt)) die(std::string("no ggml type for ") + moe::qtype_name(t));
  const int bs = static_cast<int>(ggml_blck_size(gt));
  if (D % bs != 0 || F % bs != 0 || (Fs > 0 && Fs % bs != 0))
    die(c.path + moe::strfmt(": widths D %d, F %d, shared %d must be multiples of %s's block, %d",
                             D, F, Fs, moe::qtype_name(t), bs));
  L->type = t;
  L->D = D;
  L->F = F;
  L->E = E;
  L->K = c.top_k;
  L->Fs = Fs;
  L->router = random_matrix(E, D, moe::QT_F32, seed, 0xd000);
  if (c.router.has_bias) L->router_b = random_matrix(1, E, moe::QT_F32, seed, 0xd001);
  if (c.router.has_correction_bias) L->sel_b = random_matrix(1, E, moe::QT_F32, seed, 0xd002);
  L->gate_exps = random_matrix(int64_t{E} * F, D, t, seed, 0xe001);
  L->up_exps = random_matrix(int64_t{E} * F, D, t, seed, 0xe002);
  L->down_exps = random_matrix(int64_t{E} * D, F, t, seed, 0xe003);
  L->expert_bytes = 2 * F * moe::qtype_row_bytes(t, D) + D * moe::qtype_row_bytes(t, F);
  L->dense_bytes = L->router.n + L->router_b.n + L->sel_b.n;
  moe::LayerWeights& lw = L->lw;
  lw = moe::LayerWeights();
  lw.router = {fp(L->router), fp(L->router_b), E, D};
  lw.e_bias = fp(L->sel_b);
  lw.experts.resize(E);
  for (int e = 0; e < E; ++e) {
    moe::ExpertWeights& ew = lw.experts[e];
    ew.gate_q = raw(L->gate_exps, int64_t{e} * F, t, D);
    ew.up_q = raw(L->up_exps, int64_t{e} * F, t, D);
    ew.down_q = raw(L->down_exps, int64_t{e} * D, t, F);
  }
  if (Fs > 0) {
    L->sh_gate = random_matrix(Fs, D, t, seed, 0xd010);
    L->sh_up = random_matrix(Fs, D, t, seed, 0xd011);
    L->sh_down = random_matrix(D, Fs, t, seed, 0xd012);
    L->dense_bytes += L->sh_gate.n + L->sh_up.n + L->sh_down.n;
    lw.shared.gate = {nullptr, nullptr, Fs, D, raw(L->sh_gate, 0, t, D)};
    lw.shared.up = {nullptr, nullptr, Fs, D, raw(L->sh_up, 0, t, D)};
    lw.shared.down = {nullptr, nullptr, D, Fs, raw(L->sh_down, 0, t, Fs)};
    if (c.shared_gate) {
      L->sh_gate_inp = random_matrix(1, D, moe::QT_F32, seed, 0xd013);
      L->dense_bytes += L->sh_gate_inp.n;
      lw.shared_gate = {fp(L->sh_gate_inp), nullptr, 1, D};
    }
  }
}

PeerWeights peer_weights_of(const HostLayer& L) {
  PeerWeights w;
  if (!ggml_type_of(L.type, &w.type)) die(std::string("no ggml type for ") + moe::qtype_name(L.type));
  w.shared_type = w.type;
  w.router = L.router.data();
  w.router_b = L.router_b.p ? L.router_b.data() : nullptr;
  w.sel_b = L.sel_b.p ? L.sel_b.data() : nullptr;
  w.gate_exps = L.gate_exps.data();
  w.up_exps = L.up_exps.data();
  w.down_exps = L.down_exps.data();
  if (L.Fs > 0) {
    w.sh_gate = L.sh_gate.data();
    w.sh_up = L.sh_up.data();
    w.sh_down = L.sh_down.data();
    w.sh_gate_inp = L.sh_gate_inp.p ? L.sh_gate_inp.data() : nullptr;
  }
  return w;
}

int check_same_bytes(const HostLayer& L) {
  ggml_type gt;
  if (!ggml_type_of(L.type, &gt)) die(std::string("no ggml type for ") + moe::qtype_name(L.type));
  const ggml_type_traits* tr = ggml_get_type_traits(gt);
  if (L.type != moe::QT_F32 && !tr->to_float) die("ggml has no to_float for this type");
  struct M { const HostBuf* b; int64_t rows, cols; const char* name; };
  const M ms[] = {{&L.gate_exps, int64_t{L.E} * L.F, L.D, "gate_exps"},
                  {&L.up_exps, int64_t{L.E} * L.F, L.D, "up_exps"},
                  {&L.down_exps, int64_t{L.E} * L.D, L.F, "down_exps"}};
  int checked = 0;
  for (const M& m : ms) {
    const int64_t rb = moe::qtype_row_bytes(L.type, m.cols);
    std::vector<float> a(m.cols), b(m.cols);  // (cols) each side's dequantized row
    for (int64_t r : {int64_t{0}, m.rows / 3, m.rows - 1}) {
      const uint8_t* row = m.b->data() + r * rb;
      moe::dequantize_row(L.type, row, a.data(), m.cols);
      if (L.type == moe::QT_F32) std::memcpy(b.data(), row, m.cols * sizeof(float));
      else tr->to_float(row, b.data(), m.cols);
      if (std::memcmp(a.data(), b.data(), m.cols * sizeof(float)) != 0)
        die(std::string(m.name) + " row " + std::to_string(r) + ": moe.cpp and ggml dequantize " +
            moe::qtype_name(L.type) + " differently");
      ++checked;
    }
  }
  return checked;
}

}  // namespace peer
