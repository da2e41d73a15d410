#include "moe/moe_train.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/ops.h"

namespace moe {

void moe_acts_init(MoeActs* a, const ModelConfig& c, int N_max) {
  const int64_t D = c.hidden, E = c.n_experts, K = c.top_k, F = c.expert_ffn;
  const int64_t S = c.shared_ffn;
  routing_init(&a->routing, N_max, static_cast<int>(E), static_cast<int>(K));
  // Expert choice never exceeds N*K, nor E when N*K < E (one token per expert at least).
  const int64_t A = std::max(static_cast<int64_t>(N_max) * K, E);
  const int64_t W = std::max(A, static_cast<int64_t>(N_max)), FW = std::max(F, S);
  a->logits.assign(N_max * E, 0.0f);
  a->nlogits.assign(N_max * E, 0.0f);
  a->off.assign(E + 1, 0);
  a->cursor.assign(E, 0);
  a->order.assign(A, 0);
  a->slot.assign(A, -1);
  a->xs.assign(A * D, 0.0f);
  a->g.assign(A * F, 0.0f);
  a->u.assign(A * F, 0.0f);
  a->act.assign(A * F, 0.0f);
  a->ys.assign(A * D, 0.0f);
  a->sg.assign(N_max * S, 0.0f);
  a->su.assign(N_max * S, 0.0f);
  a->sact.assign(N_max * S, 0.0f);
  a->sy.assign(N_max * D, 0.0f);
  a->sgate.assign(N_max, 0.0f);
  a->dw.assign(A, 0.0f);
  a->dsgate.assign(N_max, 0.0f);
  a->dys.assign(A * D, 0.0f);
  a->dact.assign(W * FW, 0.0f);
  a->dg.assign(W * FW, 0.0f);
  a->du.assign(W * FW, 0.0f);
  a->dxs.assign(A * D, 0.0f);
  a->dlogits.assign(N_max * E, 0.0f);
  a->dnlogits.assign(N_max * E, 0.0f);
  a->tmp.assign(N_max * D, 0.0f);
}

MoeLosses moe_train_forward(float* out, MoeActs* a, const ModelConfig& c, const LayerWeights& w,
                            const float* w_noise, const MoeLossSpec& ls, const float* x,
                            const int32_t* ids, int N, int seq_len, uint64_t seed, bool train) {
  const int D = c.hidden, E = c.n_experts, F = c.expert_ffn;
  MOE_CHECK(static_cast<size_t>(N) * E <= a->logits.size());
  a->N = N;
  const RouterSpec& spec = c.router;
  Routing& r = a->routing;
  const bool learned = spec.kind != ROUTER_HASH && spec.kind != ROUTER_RANDOM;
  if (learned) op_linear(a->logits.data(), x, w.router.w, w.router.b, N, E, D);
  if (spec.kind == ROUTER_NOISY_TOPK) op_linear(a->nlogits.data(), x, w_noise, nullptr, N, E, D);
  router_forward(&r, spec, learned ? a->logits.data() : nullptr, w.e_bias,
                 spec.kind == ROUTER_NOISY_TOPK ? a->nlogits.data() : nullptr, ids, N,
                 ls.capacity_factor, seed, train);

  // Sort the kept assignments by expert.
  int32_t* off = a->off.data();
  std::fill(off, off + E + 1, 0);
  for (int i = 0; i < r.A; ++i)
    if (r.kept[i]) ++off[r.expert[i] + 1];
  for (int e = 0; e < E; ++e) off[e + 1] += off[e];
  {
    int32_t* fill = a->cursor.data();
    std::copy(off, off + E, fill);
    for (int i = 0; i < r.A; ++i) {
      a->slot[i] = -1;
      if (!r.kept[i]) continue;
      const int32_t p = fill[r.expert[i]]++;
      a->order[p] = i;
      a->slot[i] = p;
    }
  }
  const int n_kept = off[E];
  for (int p = 0; p < n_kept; ++p)
    std::memcpy(a->xs.data() + static_cast<int64_t>(p) * D,
                x + static_cast<int64_t>(r.tok[a->order[p]]) * D, sizeof(float) * D);
  for (int e = 0; e < E; ++e) {
    const int n = off[e + 1] - off[e];
    if (n == 0) continue;
    const ExpertWeights& ew = w.experts[e];
    const int64_t o = off[e];
    op_linear(a->g.data() + o * F, a->xs.data() + o * D, ew.gate, nullptr, n, F, D);
    op_linear(a->u.data() + o * F, a->xs.data() + o * D, ew.up, nullptr, n, F, D);
    op_swiglu(a->act.data() + o * F, a->g.data() + o * F, a->u.data() + o * F,
              static_cast<int64_t>(n) * F);
    op_linear(a->ys.data() + o * D, a->act.data() + o * F, ew.down, nullptr, n, D, F);
  }
  // Combine in assignment order (deterministic).
  std::fill(out, out + static_cast<int64_t>(N) * D, 0.0f);
  for (int i = 0; i < r.A; ++i) {
    if (a->slot[i] < 0) continue;
    float* o = out + static_cast<int64_t>(r.tok[i]) * D;
    const float* y = a->ys.data() + static_cast<int64_t>(a->slot[i]) * D;
    const float wi = r.w[i];
    for (int d = 0; d < D; ++d) o[d] += wi * y[d];
  }
  if (c.shared_ffn > 0) {
    const int S = c.shared_ffn;
    op_linear(a->sg.data(), x, w.shared.gate.w, nullptr, N, S, D);
    op_linear(a->su.data(), x, w.shared.up.w, nullptr, N, S, D);
    op_swiglu(a->sact.data(), a->sg.data(), a->su.data(), static_cast<int64_t>(N) * S);
    op_linear(a->sy.data(), a->sact.data(), w.shared.down.w, nullptr, N, D, S);
    if (c.shared_gate) op_linear(a->sgate.data(), x, w.shared_gate.w, nullptr, N, 1, D);
    for (int t = 0; t < N; ++t) {
      const float gt = c.shared_gate ? op_sigmoid(a->sgate[t]) : 1.0f;
      float* o = out + static_cast<int64_t>(t) * D;
      const float* y = a->sy.data() + static_cast<int64_t>(t) * D;
      for (int d = 0; d < D; ++d) o[d] += gt * y[d];
    }
  }
  MoeLosses L;
  if (learned) {
    if (ls.aux > 0) L.aux = router_aux_loss(r, spec, ls.aux, 0.0f, nullptr);
    if (ls.z > 0) L.z = router_z_loss(a->logits.data(), N, E, ls.z, 0.0f, nullptr);
    if (ls.seq_aux > 0) L.seq_aux = router_seq_aux_loss(r, spec, seq_len, ls.seq_aux, 0.0f, nullptr);
    if (ls.device > 0) L.device = router_device_loss(r, spec, ls.n_devices, ls.device, 0.0f, nullptr);
  }
  return L;
}

void moe_train_backward(float* dx, MoeActs* a, const ModelConfig& c, const LayerWeights& w,
                        const float* w_noise, const LayerWeights& grads, float* g_noise,
                        const MoeLossSpec& ls, const float* x, const float* dout, int seq_len,
                        float loss_scale) {
  const int D = c.hidden, E = c.n_experts, F = c.expert_ffn, N = a->N;
  const RouterSpec& spec = c.router;
  const Routing& r = a->routing;
  const int32_t* off = a->off.data();
  auto wr = [](const float* p) { return const_cast<float*>(p); };  // gradient arenas are writable

  // Combine: dw_i = <dout_t, y_i>, dy_i = w_i dout_t.
  for (int i = 0; i < r.A; ++i) {
    a->dw[i] = 0.0f;
    if (a->slot[i] < 0) continue;
    const float* go = dout + static_cast<int64_t>(r.tok[i]) * D;
    const int64_t p = a->slot[i];
    const float* y = a->ys.data() + p * D;
    float* dy = a->dys.data() + p * D;
    float s = 0.0f;
    for (int d = 0; d < D; ++d) {
      s += go[d] * y[d];
      dy[d] = r.w[i] * go[d];
    }
    a->dw[i] = s;
  }
  // Experts, segment by segment.
  for (int e = 0; e < E; ++e) {
    const int n = off[e + 1] - off[e];
    if (n == 0) continue;
    const ExpertWeights& ew = w.experts[e];
    const ExpertWeights& eg = grads.experts[e];
    const int64_t o = off[e];
    float* dact = a->dact.data();
    op_linear_backward(dact, wr(eg.down), nullptr, a->dys.data() + o * D, a->act.data() + o * F,
                       ew.down, n, D, F);
    op_swiglu_backward(a->dg.data(), a->du.data(), dact, a->g.data() + o * F, a->u.data() + o * F,
                       static_cast<int64_t>(n) * F);
    float* dxs = a->dxs.data() + o * D;
    op_linear_backward(dxs, wr(eg.gate), nullptr, a->dg.data(), a->xs.data() + o * D, ew.gate, n,
                       F, D);
    op_linear_backward(a->tmp.data(), wr(eg.up), nullptr, a->du.data(), a->xs.data() + o * D,
                       ew.up, n, F, D);
    for (int64_t i = 0; i < static_cast<int64_t>(n) * D; ++i) dxs[i] += a->tmp[i];
  }
  std::fill(dx, dx + static_cast<int64_t>(N) * D, 0.0f);
  for (int p = 0; p < off[E]; ++p) {
    float* d = dx + static_cast<int64_t>(r.tok[a->order[p]]) * D;
    const float* s = a->dxs.data() + static_cast<int64_t>(p) * D;
    for (int i = 0; i < D; ++i) d[i] += s[i];
  }
  // Router: combine-weight gradients plus the balancing losses, then the router linears.
  const bool learned = spec.kind != ROUTER_HASH && spec.kind != ROUTER_RANDOM;
  if (learned) {
    float* dl = a->dlogits.data();
    router_backward(r, spec, a->dw.data(), dl, a->dnlogits.data());
    if (ls.aux > 0) router_aux_loss(r, spec, ls.aux, loss_scale, dl);
    if (ls.z > 0) router_z_loss(a->logits.data(), N, E, ls.z, loss_scale, dl);
    if (ls.seq_aux > 0) router_seq_aux_loss(r, spec, seq_len, ls.seq_aux, loss_scale, dl);
    if (ls.device > 0) router_device_loss(r, spec, ls.n_devices, ls.device, loss_scale, dl);
    op_linear_backward(a->tmp.data(), wr(grads.router.w), wr(grads.router.b), dl, x, w.router.w, N,
                       E, D);
    for (int64_t i = 0; i < static_cast<int64_t>(N) * D; ++i) dx[i] += a->tmp[i];
    if (spec.kind == ROUTER_NOISY_TOPK) {
      op_linear_backward(a->tmp.data(), g_noise, nullptr, a->dnlogits.data(), x, w_noise, N, E, D);
      for (int64_t i = 0; i < static_cast<int64_t>(N) * D; ++i) dx[i] += a->tmp[i];
    }
  }
  // Shared expert(s): out += gate_t * y_t.
  if (c.shared_ffn > 0) {
    const int S = c.shared_ffn;
    float* dy = a->tmp.data();  // (N, D)
    for (int t = 0; t < N; ++t) {
      const float* go = dout + static_cast<int64_t>(t) * D;
      float* d = dy + static_cast<int64_t>(t) * D;
      if (c.shared_gate) {
        const float gt = op_sigmoid(a->sgate[t]);
        const float* y = a->sy.data() + static_cast<int64_t>(t) * D;
        float dgate = 0.0f;
        for (int i = 0; i < D; ++i) {
          dgate += go[i] * y[i];
          d[i] = gt * go[i];
        }
        a->dsgate[t] = dgate * gt * (1.0f - gt);
      } else {
        std::copy(go, go + D, d);
      }
    }
    if (c.shared_gate) {
      // dx += dgate_logit * w_gate; dW_gate += dgate_logit^T x
      float* gg = wr(grads.shared_gate.w);
      for (int t = 0; t < N; ++t) {
        const float dgl = a->dsgate[t];
        const float* xt = x + static_cast<int64_t>(t) * D;
        float* d = dx + static_cast<int64_t>(t) * D;
        for (int i = 0; i < D; ++i) {
          d[i] += dgl * w.shared_gate.w[i];
          gg[i] += dgl * xt[i];
        }
      }
    }
    float* dact = a->dact.data();
    op_linear_backward(dact, wr(grads.shared.down.w), nullptr, dy, a->sact.data(), w.shared.down.w,
                       N, D, S);
    op_swiglu_backward(a->dg.data(), a->du.data(), dact, a->sg.data(), a->su.data(),
                       static_cast<int64_t>(N) * S);
    op_linear_backward(a->dxs.data(), wr(grads.shared.gate.w), nullptr, a->dg.data(), x,
                       w.shared.gate.w, N, S, D);
    for (int64_t i = 0; i < static_cast<int64_t>(N) * D; ++i) dx[i] += a->dxs[i];
    op_linear_backward(a->dxs.data(), wr(grads.shared.up.w), nullptr, a->du.data(), x,
                       w.shared.up.w, N, S, D);
    for (int64_t i = 0; i < static_cast<int64_t>(N) * D; ++i) dx[i] += a->dxs[i];
  }
}

}  // namespace moe
