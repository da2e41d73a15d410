#include "train/train_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/router.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "train/train_attention.h"
#include "train/train_mtp.h"

namespace moe {

namespace {

float* wr(const float* p) { return const_cast<float*>(p); }  // gradient views are writable

void add_into(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// The views of m into an arena (params or grads); tensors not held are validated, not bound.
void bind_arena(Model* m, const TrainModel& tm, float* base) {
  *m = Model();  // a rebind starts afresh: no converted buffers or parameter counts carried over
  m->cfg = tm.cfg;
  m->archive.origin = "training arena";
  for (size_t i = 0; i < tm.specs.size(); ++i) {
    StTensor t;
    t.name = tm.specs[i].name;
    t.dtype = DT_F32;
    t.shape = tm.specs[i].shape;
    t.data = tm.held[i] ? reinterpret_cast<const uint8_t*>(base + tm.offset[i]) : nullptr;
    t.nbytes = static_cast<size_t>(t.numel()) * 4;
    m->archive.tensors[t.name] = t;
  }
  LoadOptions opt;
  opt.expert_begin = tm.expert_begin;
  opt.expert_end = tm.expert_end;
  model_bind(m, opt);
}

// The routed expert of a per-expert tensor ("...experts.<e>.<matrix>"), else -1.
int32_t tensor_expert(const std::string& name) {
  const size_t p = name.find(".experts.");
  if (p == std::string::npos) return -1;
  const size_t b = p + std::strlen(".experts."), e = name.find('.', b);
  if (e == std::string::npos || e == b || e - b > 9 ||
      name.find_first_not_of("0123456789", b) != e)
    return -1;
  return static_cast<int32_t>(std::stol(name.substr(b, e - b)));
}

bool ends_with(const std::string& s, const char* suf) {
  const size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

// gpt-oss stores its experts as gate_up_proj (E, D, 2F), gate and up interleaved on the last axis,
// and down_proj (E, F, D); model_bind converts them into (E, F, D) / (E, D, F) buffers of the
// Model (and the gate/up biases into (E, F) ones). The arena keeps the stored layout, so before a
// forward the converted weights are refreshed from it, and after a backward the converted
// gradients are added into it and cleared. f(arena element, converted element) is called for
// every pair; down_proj_bias is bound in place and needs nothing.
template <typename Fn>
void gpt_oss_expert_pairs(TrainModel* tm, const Model& m, float* base, Fn f) {
  const ModelConfig& c = tm->cfg;
  const int64_t E = c.n_experts, D = c.hidden, F = c.expert_ffn;
  for (int l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe[l]) continue;
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    float* gu = base + tm->offset[train_model_find(*tm, p + "gate_up_proj")];        // (E, D, 2F)
    float* gub = base + tm->offset[train_model_find(*tm, p + "gate_up_proj_bias")];  // (E, 2F)
    float* dn = base + tm->offset[train_model_find(*tm, p + "down_proj")];           // (E, F, D)
    for (int64_t e = 0; e < E; ++e) {
      const ExpertWeights& x = m.layers[l].experts[e];
      float* gate = wr(x.gate);  // (F, D)
      float* up = wr(x.up);      // (F, D)
      float* down = wr(x.down);  // (D, F)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j = 0; j < F; ++j) {
          f(gu[(e * D + d) * 2 * F + 2 * j], gate[j * D + d]);
          f(gu[(e * D + d) * 2 * F + 2 * j + 1], up[j * D + d]);
          f(dn[(e * F + j) * D + d], down[d * F + j]);
        }
      for (int64_t j = 0; j < F; ++j) {
        f(gub[e * 2 * F + 2 * j], wr(x.gate_b)[j]);
        f(gub[e * 2 * F + 2 * j + 1], wr(x.up_b)[j]);
      }
    }
  }
}

void gpt_oss_experts_from_arena(TrainModel* tm) {
  gpt_oss_expert_pairs(tm, tm->w, tm->params.data(),
                       [](float& arena, float& conv) { conv = arena; });
}

void gpt_oss_expert_grads_to_arena(TrainModel* tm) {
  gpt_oss_expert_pairs(tm, tm->g, tm->grads.data(), [](float& arena, float& conv) {
    arena += conv;
    conv = 0.0f;
  });
}

}  // namespace

void train_model_alloc(TrainModel* tm, const ModelConfig& cfg, bool fused_experts,
                       int expert_begin, int expert_end) {
  tm->cfg = cfg;
  tm->fused_experts = fused_experts || cfg.arch == ARCH_GPT_OSS;
  tm->specs = model_tensor_specs(cfg, tm->fused_experts);
  const bool all = expert_end < 0 || tm->fused_experts;
  MOE_CHECK(all || (0 <= expert_begin && expert_begin <= expert_end));
  tm->expert_begin = all ? 0 : expert_begin;
  tm->expert_end = all ? -1 : expert_end;
  const size_t n = tm->specs.size();
  tm->offset.assign(n, -1);
  tm->decay.assign(n, 0);
  tm->trainable.assign(n, 1);
  tm->expert_of.assign(n, -1);
  tm->held.assign(n, 1);
  for (size_t i = 0; i < n; ++i) {
    const TensorSpec& s = tm->specs[i];
    tm->decay[i] = s.shape.size() >= 2 ? 1 : 0;
    tm->trainable[i] = ends_with(s.name, "e_score_correction_bias") ? 0 : 1;
    if (s.role == TR_EXPERT) tm->expert_of[i] = tensor_expert(s.name);
    const int32_t e = tm->expert_of[i];
    tm->held[i] = all || e < 0 || (e >= tm->expert_begin && e < tm->expert_end);
  }
  // The tensors of no expert first, then the held experts' (64-byte aligned tensors).
  int64_t total = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < n; ++i) {
      if (!tm->held[i] || (tm->expert_of[i] >= 0) != (pass == 1)) continue;
      int64_t numel = 1;
      for (int64_t d : tm->specs[i].shape) numel *= d;
      tm->offset[i] = total;
      total += (numel + 15) / 16 * 16;
    }
    if (pass == 0) tm->n_shared = total;
  }
  tm->params.assign(total, 0.0f);
  tm->grads.assign(total, 0.0f);
  bind_arena(&tm->w, *tm, tm->params.data());
  bind_arena(&tm->g, *tm, tm->grads.data());
}

int64_t train_model_find(const TrainModel& tm, const std::string& name) {
  for (size_t i = 0; i < tm.specs.size(); ++i)
    if (tm.specs[i].name == name) return static_cast<int64_t>(i);
  return -1;
}

void train_model_init_weights(TrainModel* tm, uint64_t seed, float std) {
  const float out_std = std / std::sqrt(2.0f * tm->cfg.n_layers);
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (!tm->held[i]) continue;  // another rank's expert (the key keeps every value in place)
    const TensorSpec& s = tm->specs[i];
    float* p = tm->params.data() + tm->offset[i];
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    if (s.shape.size() == 1) {
      const bool norm = ends_with(s.name, "norm.weight");
      std::fill(p, p + n, norm ? 1.0f : 0.0f);
      continue;
    }
    const bool out_proj = ends_with(s.name, "o_proj.weight") || ends_with(s.name, "down_proj.weight");
    const float sd = out_proj ? out_std : std;
    const uint64_t key = seed * 0x9e3779b97f4a7c15ULL + i;
    for (int64_t j = 0; j < n; ++j) p[j] = static_cast<float>(rng_normal(key, j)) * sd;
  }
}

void train_acts_enable_ep(TrainActs* a, const TrainModel& tm, Comm* comm, Comm* route) {
  a->route_comm = route ? route : comm;
  for (int l = 0; l < tm.cfg.n_layers + tm.cfg.mtp_layers; ++l)
    if (tm.cfg.is_moe[l]) moe_state_enable_ep(&a->layers[l].moe, tm.cfg, comm, false, route);
}

void train_acts_init(TrainActs* a, const TrainModel& tm, int B, int T) {
  const Backend& be = backend();
  const ModelConfig& c = tm.cfg;
  MOE_CHECK(B > 0 && T > 0);
  const int64_t N = static_cast<int64_t>(B) * T, D = c.hidden, V = c.vocab;
  const int64_t F = std::max(c.dense_ffn, 1);
  a->B = B;
  a->T = T;
  a->layers.assign(c.n_layers + c.mtp_layers, LayerActs());
  for (int l = 0; l < c.n_layers + c.mtp_layers; ++l) {
    LayerActs& la = a->layers[l];
    la.h_in.assign(N * D, 0.0f);
    la.xn1.assign(N * D, 0.0f);
    attn_acts_init(&la, c, N, T);
    la.h_mid.assign(N * D, 0.0f);
    la.xn2.assign(N * D, 0.0f);
    if (c.is_moe[l]) {
      moe_acts_init(&la.moe, c, static_cast<int>(N));
    } else {
      la.g.assign(N * F, 0.0f);
      la.u.assign(N * F, 0.0f);
      la.act.assign(N * F, 0.0f);
    }
  }
  a->ids.assign(N, 0);
  a->targets.assign(N, -1);
  a->h.assign(N * D, 0.0f);
  a->xn.assign(N * D, 0.0f);
  a->logits.assign(N * V, 0.0f);
  a->rope_cos.assign(T * c.rope.dim / 2, 0.0f);
  a->rope_sin.assign(T * c.rope.dim / 2, 0.0f);
  be.rope_table(a->rope_cos.data(), a->rope_sin.data(), c.rope, 0, T);
  a->scores.assign(backend().attention_scratch(T), 0.0f);
  a->dlogits.assign(N * V, 0.0f);
  a->row_loss.assign(N, 0.0);
  a->adv.assign(c.router.kind == ROUTER_REINFORCE ? N : 0, 0.0f);
  a->dh.assign(N * D, 0.0f);
  a->dx.assign(N * D, 0.0f);
  a->dtmp.assign(N * D, 0.0f);
  attn_scratch_init(a, c, N);
  a->dg.assign(N * F, 0.0f);
  a->du.assign(N * F, 0.0f);
  a->dact.assign(N * F, 0.0f);
  mtp_acts_init(a, tm);
}

void train_block_forward(TrainModel* tm, TrainActs* a, int l, float* h, uint64_t seed, bool train,
                         StepLosses* out) {
  const Backend& be = backend();
  const ModelConfig& c = tm->cfg;
  const int T = a->T, N = a->B * T, D = c.hidden, F = c.dense_ffn;
  const int64_t ND = static_cast<int64_t>(N) * D;
  const LayerWeights& lw = tm->w.layers[l];
  LayerActs& la = a->layers[l];
  std::copy(h, h + ND, la.h_in.begin());
  be.rmsnorm(la.xn1.data(), h, lw.attn_norm, N, D, c.rms_eps);
  attn_train_forward(a->dtmp.data(), &la, a, c, lw, l);
  add_into(h, a->dtmp.data(), ND);
  std::copy(h, h + ND, la.h_mid.begin());
  be.rmsnorm(la.xn2.data(), h, lw.ffn_norm, N, D, c.rms_eps);
  float* ffn = a->dtmp.data();
  if (c.is_moe[l]) {
    const int32_t* ids = l < c.n_layers ? a->ids.data() : a->mtp[l - c.n_layers].ids.data();
    la.moe_losses = moe_train_forward(ffn, &la.moe, c, lw, lw.router_noise.w, tm->losses,
                                      la.xn2.data(), ids, N, T,
                                      router_layer_seed(seed, l), train);
    out->moe.aux += la.moe_losses.aux;
    out->moe.z += la.moe_losses.z;
    out->moe.seq_aux += la.moe_losses.seq_aux;
    out->moe.device += la.moe_losses.device;
    out->moe.comm += la.moe_losses.comm;
  } else {
    be.linear_f32(la.g.data(), la.xn2.data(), lw.mlp.gate.w, nullptr, N, F, D);
    be.linear_f32(la.u.data(), la.xn2.data(), lw.mlp.up.w, nullptr, N, F, D);
    be.swiglu(la.act.data(), la.g.data(), la.u.data(), static_cast<int64_t>(N) * F);
    be.linear_f32(ffn, la.act.data(), lw.mlp.down.w, nullptr, N, D, F);
  }
  add_into(h, ffn, ND);
}

StepLosses train_forward(TrainModel* tm, TrainActs* a, uint64_t seed, bool train) {
  const Backend& be = backend();
  const ModelConfig& c = tm->cfg;
  const Model& m = tm->w;
  const int T = a->T, N = a->B * T, D = c.hidden, V = c.vocab;
  StepLosses out;
  train_model_sync_views(tm);
  std::vector<float>& h = a->h;
  for (int t = 0; t < N; ++t) {
    const int32_t id = a->ids[t];
    if (id < 0 || id >= V) fail("token id %d is outside the vocabulary [0, %d)", id, V);
    std::memcpy(h.data() + static_cast<int64_t>(t) * D, m.embed + static_cast<int64_t>(id) * D,
                sizeof(float) * D);
  }
  for (int l = 0; l < c.n_layers; ++l) train_block_forward(tm, a, l, h.data(), seed, train, &out);
  be.rmsnorm(a->xn.data(), h.data(), m.final_norm, N, D, c.rms_eps);
  be.linear_f32(a->logits.data(), a->xn.data(), m.lm_head, nullptr, N, V, D);
  out.ce = be.cross_entropy(nullptr, a->logits.data(), a->targets.data(), N, V, 1.0f,
                            &out.n_targets, a->row_loss.data());
  a->mtp_done = c.mtp_layers > 0 && train;
  if (a->mtp_done) mtp_train_forward(tm, a, seed, &out);
  return out;
}

namespace {

// REINFORCE routing's advantages from the per-token losses of the last forward (a->row_loss),
// then the baseline update (train_model.h).
const float* reinforce_advantages(TrainModel* tm, TrainActs* a) {
  if (tm->cfg.router.kind != ROUTER_REINFORCE) return nullptr;
  const int N = a->B * a->T;
  double sum_n[2] = {0.0, 0.0};  // summed reward, counted targets
  for (int t = 0; t < N; ++t)
    if (a->targets[t] >= 0) sum_n[0] -= a->row_loss[t], sum_n[1] += 1.0;
  if (a->route_comm && a->route_comm->size() > 1)  // the global batch's, as in one process
    a->route_comm->allreduce(sum_n, 2, ReduceType::F64, ReduceOp::SUM);
  const double sum = sum_n[0];
  const int64_t n = static_cast<int64_t>(sum_n[1]);
  std::fill(a->adv.begin(), a->adv.end(), 0.0f);
  if (n == 0) return a->adv.data();
  const double mean = sum / n;
  if (!std::isfinite(tm->rl_baseline)) tm->rl_baseline = mean;
  const double b = tm->rl_baseline;
  for (int t = 0; t < N; ++t)
    if (a->targets[t] >= 0) a->adv[t] = static_cast<float>((-a->row_loss[t] - b) / n);
  tm->rl_baseline = tm->rl_decay * b + (1.0 - tm->rl_decay) * mean;
  return a->adv.data();
}

}  // namespace

void train_block_backward(TrainModel* tm, TrainActs* a, int l, float* dh, float loss_scale,
                          const float* adv) {
  const Backend& be = backend();
  const ModelConfig& c = tm->cfg;
  const int T = a->T, N = a->B * T, D = c.hidden, F = c.dense_ffn;
  const int64_t ND = static_cast<int64_t>(N) * D;
  float* dx = a->dx.data();
  float* dtmp = a->dtmp.data();
  const LayerWeights& lw = tm->w.layers[l];
  const LayerWeights& lg = tm->g.layers[l];
  LayerActs& la = a->layers[l];
  // FFN: dtmp = d xn2
  if (c.is_moe[l]) {
    moe_train_backward(dtmp, &la.moe, c, lw, lw.router_noise.w, lg, wr(lg.router_noise.w),
                       tm->losses, la.xn2.data(), dh, T, loss_scale, adv);
  } else {
    const int64_t NF = static_cast<int64_t>(N) * F;
    be.linear_backward(a->dact.data(), wr(lg.mlp.down.w), nullptr, dh, la.act.data(),
                       lw.mlp.down.w, N, D, F);
    be.swiglu_backward(a->dg.data(), a->du.data(), a->dact.data(), la.g.data(), la.u.data(), NF);
    be.linear_backward(dtmp, wr(lg.mlp.gate.w), nullptr, a->dg.data(), la.xn2.data(),
                       lw.mlp.gate.w, N, F, D);
    be.linear_backward(dx, wr(lg.mlp.up.w), nullptr, a->du.data(), la.xn2.data(), lw.mlp.up.w, N,
                       F, D);
    add_into(dtmp, dx, ND);
  }
  be.rmsnorm_backward(dx, wr(lg.ffn_norm), dtmp, la.h_mid.data(), lw.ffn_norm, N, D, c.rms_eps);
  add_into(dh, dx, ND);  // dh = d h_mid
  attn_train_backward(dx, &la, a, c, lw, lg, dh, l);
  be.rmsnorm_backward(dtmp, wr(lg.attn_norm), dx, la.h_in.data(), lw.attn_norm, N, D, c.rms_eps);
  add_into(dh, dtmp, ND);  // dh = d h_in
}

void train_backward(TrainModel* tm, TrainActs* a, float loss_scale, float ce_scale) {
  const Backend& be = backend();
  const ModelConfig& c = tm->cfg;
  const Model& m = tm->w;
  const Model& g = tm->g;
  const int T = a->T, N = a->B * T, D = c.hidden, V = c.vocab;
  const int64_t ND = static_cast<int64_t>(N) * D;
  // The MTP modules first: their gradient of the main model's last hidden state waits in a->dh0.
  const bool mtp = a->mtp_done;
  if (mtp) mtp_train_backward(tm, a, loss_scale, ce_scale);
  be.cross_entropy(a->dlogits.data(), a->logits.data(), a->targets.data(), N, V,
                   loss_scale * ce_scale, nullptr, a->row_loss.data());
  const float* adv = reinforce_advantages(tm, a);
  float* dh = a->dh.data();
  float* dx = a->dx.data();
  be.linear_backward(dx, wr(g.lm_head), nullptr, a->dlogits.data(), a->xn.data(), m.lm_head, N, V, D);
  be.rmsnorm_backward(dh, wr(g.final_norm), dx, a->h.data(), m.final_norm, N, D, c.rms_eps);
  if (mtp) add_into(dh, a->dh0.data(), ND);
  for (int l = c.n_layers - 1; l >= 0; --l) train_block_backward(tm, a, l, dh, loss_scale, adv);
  float* ge = wr(g.embed);
  for (int t = 0; t < N; ++t)
    add_into(ge + static_cast<int64_t>(a->ids[t]) * D, dh + static_cast<int64_t>(t) * D, D);
  if (c.arch == ARCH_GPT_OSS) gpt_oss_expert_grads_to_arena(tm);
}

}  // namespace moe

namespace moe {

void train_model_check_weights(const StArchive& ar) {
  for (const auto& [name, t] : ar.tensors) {
    if (t.dtype == DT_F32 || t.dtype == DT_BF16 || t.dtype == DT_F16) continue;
    const std::string& file = t.file ? *t.file : ar.origin;
    fail("%s: tensor '%s': stored as %s; training starts from F32, BF16 or F16 weights, not a "
         "quantized checkpoint (train the unquantized model, then quantize it)",
         file.c_str(), name.c_str(), dtype_name(t.dtype));
  }
}

void train_model_sync_views(TrainModel* tm) {
  if (tm->cfg.arch == ARCH_GPT_OSS) gpt_oss_experts_from_arena(tm);
}

void train_model_rebind(TrainModel* tm) { bind_arena(&tm->w, *tm, tm->params.data()); }

void train_model_load_weights(TrainModel* tm, const StArchive& ar) {
  bool all_found = true;
  for (const TensorSpec& s : tm->specs) all_found = all_found && ar.find(s.name) != nullptr;
  if (!all_found && tm->cfg.n_experts > 0 && tm->cfg.arch != ARCH_GPT_OSS) {
    const std::vector<TensorSpec> other = model_tensor_specs(tm->cfg, !tm->fused_experts);
    bool other_found = true;
    for (const TensorSpec& s : other) other_found = other_found && ar.find(s.name) != nullptr;
    if (other_found) {
      const MoeLossSpec losses = tm->losses;
      train_model_alloc(tm, tm->cfg, !tm->fused_experts, tm->expert_begin, tm->expert_end);
      tm->losses = losses;
    }
  }
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    const TensorSpec& s = tm->specs[i];
    const StTensor& t = ar.get(s.name);
    const std::string& file = t.file ? *t.file : ar.origin;
    if (t.shape != s.shape)
      fail("%s: tensor '%s': shape does not match the model's configuration", file.c_str(),
           s.name.c_str());
    if (t.dtype != DT_F32 && t.dtype != DT_BF16 && t.dtype != DT_F16)
      fail("%s: tensor '%s': dtype %s is not F32, BF16 or F16", file.c_str(), s.name.c_str(),
           dtype_name(t.dtype));
    if (!tm->held[i]) continue;  // another rank's expert: checked, not read
    dtype_to_f32(t.dtype, t.data, tm->params.data() + tm->offset[i], static_cast<size_t>(t.numel()));
  }
  train_model_rebind(tm);
}

}  // namespace moe
