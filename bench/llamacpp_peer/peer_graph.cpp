#include "peer_graph.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include "ggml-cpu.h"

namespace peer {

namespace {

[[noreturn]] void die(const std::string& m) { throw std::runtime_error("llamacpp_peer: " + m); }

// How a weight is used: the op llama.cpp tests a buffer type with (weight_buft_supported).
enum Use { USE_MUL_MAT, USE_MUL_MAT_ID, USE_OTHER };

struct WeightDef {
  const char* name;
  ggml_type type;
  int64_t ne0, ne1, ne2;  // ne2 = experts (1 for plain matrices)
  Use use;
  const void* data;
  ggml_tensor** dst;
};

// Does buffer type buft support the op that uses w? As llama.cpp: the op on a dummy (size 0)
// buffer of that type, asked of the device. Batch of 512 tokens, as llama.cpp's test op.
bool buft_supports(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, const WeightDef& d,
                   int n_used) {
  if (d.use == USE_OTHER) return false;
  ggml_init_params ip = {ggml_tensor_overhead() * 8, nullptr, true};
  ggml_context* ctx = ggml_init(ip);
  if (!ctx) die("ggml_init failed");
  ggml_tensor* w = ggml_new_tensor_3d(ctx, d.type, d.ne0, d.ne1, d.ne2);
  ggml_tensor* op = nullptr;
  if (d.use == USE_MUL_MAT) {
    ggml_tensor* b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, d.ne0, 512);
    op = ggml_mul_mat(ctx, w, b);
  } else {
    ggml_tensor* b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, d.ne0, n_used, 512);
    ggml_tensor* ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_used, 512);
    op = ggml_mul_mat_id(ctx, w, b, ids);
  }
  ggml_backend_buffer_t dummy = ggml_backend_buft_alloc_buffer(buft, 0);
  w->buffer = dummy;
  const bool ok = ggml_backend_dev_supports_op(dev, op);
  w->buffer = nullptr;
  ggml_backend_buffer_free(dummy);
  ggml_free(ctx);
  return ok;
}

// The buffer types llama.cpp tries for a CPU weight, in order: the device's extra ones (from the
// registry's "ggml_backend_dev_get_extra_bufts"), then the plain CPU type.
std::vector<ggml_backend_buffer_type_t> cpu_buft_list(ggml_backend_dev_t dev) {
  std::vector<ggml_backend_buffer_type_t> list;
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
  auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
      ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
  if (get_extra)
    for (ggml_backend_buffer_type_t* p = get_extra(dev); p && *p; ++p) list.push_back(*p);
  list.push_back(ggml_backend_dev_buffer_type(dev));
  return list;
}

std::vector<WeightDef> weight_defs(PeerLayer* L, const PeerWeights& w) {
  const PeerSpec& s = L->spec;
  std::vector<WeightDef> d = {
      {"ffn_gate_inp", GGML_TYPE_F32, s.D, s.E, 1, USE_MUL_MAT, w.router, &L->router},
      {"ffn_gate_exps", w.type, s.D, s.F, s.E, USE_MUL_MAT_ID, w.gate_exps, &L->gate_exps},
      {"ffn_up_exps", w.type, s.D, s.F, s.E, USE_MUL_MAT_ID, w.up_exps, &L->up_exps},
      {"ffn_down_exps", w.type, s.F, s.D, s.E, USE_MUL_MAT_ID, w.down_exps, &L->down_exps}};
  if (s.router_bias)
    d.push_back({"ffn_gate_inp.bias", GGML_TYPE_F32, s.E, 1, 1, USE_OTHER, w.router_b, &L->router_b});
  if (s.selection_bias)
    d.push_back({"exp_probs_b", GGML_TYPE_F32, s.E, 1, 1, USE_OTHER, w.sel_b, &L->sel_b});
  if (s.Fs > 0) {
    d.push_back({"ffn_gate_shexp", w.shared_type, s.D, s.Fs, 1, USE_MUL_MAT, w.sh_gate, &L->sh_gate});
    d.push_back({"ffn_up_shexp", w.shared_type, s.D, s.Fs, 1, USE_MUL_MAT, w.sh_up, &L->sh_up});
    d.push_back({"ffn_down_shexp", w.shared_type, s.Fs, s.D, 1, USE_MUL_MAT, w.sh_down, &L->sh_down});
    if (s.shared_gate)
      d.push_back({"ffn_gate_inp_shexp", GGML_TYPE_F32, s.D, 1, 1, USE_MUL_MAT, w.sh_gate_inp,
                   &L->sh_gate_inp});
  }
  return d;
}

}  // namespace

void peer_layer_init(PeerLayer* L, const PeerSpec& spec, const PeerWeights& w) {
  L->spec = spec;
  L->dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (!L->dev) die("no CPU device in the ggml registry");
  L->backend = ggml_backend_dev_init(L->dev, nullptr);
  if (!L->backend) die("cannot start the CPU backend");
  ggml_backend_cpu_set_n_threads(L->backend, spec.threads);
  const std::vector<ggml_backend_buffer_type_t> bufts = cpu_buft_list(L->dev);
  const std::vector<WeightDef> defs = weight_defs(L, w);
  // Choose each weight's buffer type, then create the tensors grouped by type.
  std::map<ggml_backend_buffer_type_t, ggml_context*> by_buft;
  for (const WeightDef& d : defs) {
    ggml_backend_buffer_type_t chosen = bufts.back();
    for (ggml_backend_buffer_type_t b : bufts)
      if (buft_supports(L->dev, b, d, spec.K)) {
        chosen = b;
        break;
      }
    ggml_context*& ctx = by_buft[chosen];
    if (!ctx) {
      ggml_init_params ip = {ggml_tensor_overhead() * 16, nullptr, true};
      ctx = ggml_init(ip);
      if (!ctx) die("ggml_init failed");
      L->ctxs.push_back(ctx);
    }
    *d.dst = d.ne2 > 1 ? ggml_new_tensor_3d(ctx, d.type, d.ne0, d.ne1, d.ne2)
                       : ggml_new_tensor_2d(ctx, d.type, d.ne0, d.ne1);
    ggml_set_name(*d.dst, d.name);
    L->placement.push_back(std::string(d.name) + " (" + ggml_type_name(d.type) + "): " +
                           ggml_backend_buft_name(chosen));
  }
  for (auto& [buft, ctx] : by_buft) {
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
    if (!buf) die(std::string("cannot allocate the weights in ") + ggml_backend_buft_name(buft));
    ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    L->bufs.push_back(buf);
  }
  for (const WeightDef& d : defs) {
    if (!d.data) die(std::string("no data for ") + d.name);
    ggml_backend_tensor_set(*d.dst, d.data, 0, ggml_nbytes(*d.dst));  // repacks where placed so
  }
}

void peer_layer_free(PeerLayer* L) {
  for (ggml_backend_buffer_t b : L->bufs) ggml_backend_buffer_free(b);
  for (ggml_context* c : L->ctxs) ggml_free(c);
  if (L->backend) ggml_backend_free(L->backend);
  *L = PeerLayer();
}

namespace {

// The routed part, as build_moe_ffn: returns the (D, T) sum over experts; sets g->selected and
// g->weights.
ggml_tensor* build_routed(ggml_context* ctx, ggml_cgraph* gf, const PeerLayer& L, PeerGraph* g) {
  const PeerSpec& s = L.spec;
  const int T = g->T;
  ggml_tensor* logits = ggml_mul_mat(ctx, L.router, g->x);  // (E, T)
  if (L.router_b) logits = ggml_add(ctx, logits, L.router_b);
  ggml_tensor* probs = logits;
  if (s.gating == PeerSpec::SOFTMAX) probs = ggml_soft_max(ctx, logits);
  else if (s.gating == PeerSpec::SIGMOID) probs = ggml_sigmoid(ctx, logits);
  ggml_tensor* selection = L.sel_b ? ggml_add(ctx, probs, L.sel_b) : probs;
  ggml_tensor* selected = ggml_argsort_top_k(ctx, selection, s.K);  // (K, T)
  ggml_tensor* weights =
      ggml_get_rows(ctx, ggml_reshape_3d(ctx, probs, 1, s.E, T), selected);  // (1, K, T)
  if (s.gating == PeerSpec::SOFTMAX_WEIGHT) {
    weights = ggml_soft_max(ctx, ggml_reshape_2d(ctx, weights, s.K, T));
    weights = ggml_reshape_3d(ctx, weights, 1, s.K, T);
  }
  if (s.norm_w) {
    ggml_tensor* w2 = ggml_reshape_2d(ctx, weights, s.K, T);
    ggml_tensor* sum = ggml_clamp(ctx, ggml_sum_rows(ctx, w2), 6.103515625e-5f, INFINITY);
    weights = ggml_reshape_3d(ctx, ggml_div(ctx, w2, sum), 1, s.K, T);
  }
  if (s.w_scale != 0.0f && s.w_scale != 1.0f) weights = ggml_scale(ctx, weights, s.w_scale);
  ggml_build_forward_expand(gf, weights);
  ggml_tensor* cur = ggml_reshape_3d(ctx, g->x, s.D, 1, T);
  ggml_tensor* up = ggml_mul_mat_id(ctx, L.up_exps, cur, selected);      // (F, K, T)
  ggml_tensor* gate = ggml_mul_mat_id(ctx, L.gate_exps, cur, selected);  // (F, K, T)
  ggml_tensor* h = ggml_swiglu_split(ctx, gate, up);
  ggml_tensor* experts = ggml_mul_mat_id(ctx, L.down_exps, h, selected);  // (D, K, T)
  experts = ggml_mul(ctx, experts, weights);
  ggml_build_forward_expand(gf, experts);
  std::vector<ggml_tensor*> views(s.K);
  for (int i = 0; i < s.K; ++i) {
    views[i] = ggml_view_2d(ctx, experts, s.D, T, experts->nb[2], i * experts->nb[1]);
    ggml_build_forward_expand(gf, views[i]);
  }
  ggml_tensor* out = views[0];
  for (int i = 1; i < s.K; ++i) {
    out = ggml_add(ctx, out, views[i]);
    ggml_build_forward_expand(gf, out);
  }
  if (s.K == 1) out = ggml_cont(ctx, out);
  g->selected = selected;
  g->weights = weights;
  return out;
}

// The shared expert as llama.cpp's build_ffn (parallel gate, SiLU): (D, T).
ggml_tensor* build_shared(ggml_context* ctx, const PeerLayer& L, ggml_tensor* x) {
  ggml_tensor* up = ggml_mul_mat(ctx, L.sh_up, x);
  ggml_tensor* gate = ggml_mul_mat(ctx, L.sh_gate, x);
  ggml_tensor* y = ggml_mul_mat(ctx, L.sh_down, ggml_swiglu_split(ctx, gate, up));
  if (L.sh_gate_inp) y = ggml_mul(ctx, y, ggml_sigmoid(ctx, ggml_mul_mat(ctx, L.sh_gate_inp, x)));
  return y;
}

}  // namespace

void peer_graph_build(PeerGraph* g, const PeerLayer& L, int T) {
  g->T = T;
  ggml_init_params ip = {ggml_tensor_overhead() * GGML_DEFAULT_GRAPH_SIZE + ggml_graph_overhead(),
                         nullptr, true};
  g->ctx = ggml_init(ip);
  if (!g->ctx) die("ggml_init failed");
  g->gf = ggml_new_graph(g->ctx);
  g->x = ggml_new_tensor_2d(g->ctx, GGML_TYPE_F32, L.spec.D, T);
  ggml_set_input(g->x);
  ggml_tensor* out = build_routed(g->ctx, g->gf, L, g);
  if (L.spec.Fs > 0) out = ggml_add(g->ctx, out, build_shared(g->ctx, L, g->x));
  g->out = out;
  for (ggml_tensor* t : {g->out, g->selected, g->weights})  // kept: read back after compute
    for (; t; t = t->view_src) ggml_set_output(t);
  ggml_build_forward_expand(g->gf, g->out);
  g->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(L.backend));
  if (!ggml_gallocr_alloc_graph(g->galloc, g->gf)) die("cannot allocate the graph");
}

void peer_graph_free(PeerGraph* g) {
  if (g->galloc) ggml_gallocr_free(g->galloc);
  if (g->ctx) ggml_free(g->ctx);
  *g = PeerGraph();
}

void peer_graph_set_input(PeerGraph* g, const float* x) {
  ggml_backend_tensor_set(g->x, x, 0, ggml_nbytes(g->x));
}

void peer_graph_compute(const PeerLayer& L, PeerGraph* g) {
  if (ggml_backend_graph_compute(L.backend, g->gf) != GGML_STATUS_SUCCESS)
    die("ggml_backend_graph_compute failed");
}

void peer_graph_read(const PeerGraph& g, float* out, int32_t* selected, float* weights) {
  ggml_backend_tensor_get(g.out, out, 0, ggml_nbytes(g.out));
  const int K = static_cast<int>(g.selected->ne[0]);
  for (int t = 0; t < g.T; ++t) {  // selected: the first K of each row of the argsort
    ggml_backend_tensor_get(g.selected, selected + static_cast<int64_t>(t) * K,
                            t * g.selected->nb[1], K * sizeof(int32_t));
    ggml_backend_tensor_get(g.weights, weights + static_cast<int64_t>(t) * K,
                            t * g.weights->nb[2], K * sizeof(float));
  }
}

}  // namespace peer
