#include "moe/moe_layer.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "moe/expert_cache.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace moe {

namespace {

// The buffers sized by the tokens routed together (Nr_max) and their assignments.
void routing_buffers_init(MoeState* s, const ModelConfig& c, int Nr_max, bool train) {
  const int64_t N = Nr_max;
  const int64_t E = std::max(c.n_experts, 1), K = std::max(c.top_k, 1);
  const int64_t A = std::max(N * K, E);  // A_max
  const bool routed = c.n_experts > 0 && c.top_k > 0;
  s->logits.assign(N * E, 0.0f);
  s->nlogits.assign(train ? N * E : 0, 0.0f);
  // The balanced routers' solver scratch only where they balance: in training.
  if (routed) routing_init(&s->routing, Nr_max, c.n_experts, c.top_k,
                           train ? c.router.kind : ROUTER_TOKEN_CHOICE);
  else s->routing = Routing();
  s->idx.assign(N * K, 0);
  s->w.assign(N * K, 0.0f);
  dispatch_plan_init(&s->plan, Nr_max, static_cast<int>(E), static_cast<int>(A));
  expert_buffers_init(&s->ex, expert_ffn_spec(c), static_cast<int>(E), static_cast<int>(A), train);
  s->dw.assign(train ? A : 0, 0.0f);
  s->dlogits.assign(train ? N * E : 0, 0.0f);
  s->dnlogits.assign(train ? N * E : 0, 0.0f);
}

}  // namespace

void moe_state_init(MoeState* s, const ModelConfig& c, int N_max, bool train) {
  MOE_CHECK(N_max > 0);
  const int64_t N = N_max, D = c.hidden, S = c.shared_ffn;
  s->N_max = N_max;
  s->N = s->Nr = s->t0 = 0;
  s->train = train;
  s->dispatcher = &local_dispatcher();
  s->ep = s->ep_route = nullptr;
  s->ep_replicated = false;
  s->ep_dispatcher.reset();
  routing_buffers_init(s, c, N_max, train);
  s->seg = ExpertSegments();
  const int64_t H = std::max<int64_t>(S, c.dense_ffn);
  s->hg.assign(N * H, 0.0f);
  s->hu.assign(N * H, 0.0f);
  s->sact.assign(train ? N * S : 0, 0.0f);
  s->sy.assign(N * D, 0.0f);
  s->sgate.assign(N, 0.0f);
  linear_scratch_init(&s->lin, std::max({D, static_cast<int64_t>(c.dense_ffn), S}));
  s->dsgate.assign(train ? N : 0, 0.0f);
  s->dsact.assign(train ? N * S : 0, 0.0f);
  s->dsg.assign(train ? N * S : 0, 0.0f);
  s->dsu.assign(train ? N * S : 0, 0.0f);
  s->tmp.assign(train ? N * D : 0, 0.0f);
  s->tmp2.assign(train ? N * D : 0, 0.0f);
}

void moe_state_enable_ep(MoeState* s, const ModelConfig& c, Comm* comm, bool replicated,
                         Comm* route) {
  MOE_CHECK(s->N_max > 0);
  if (!route) route = comm;
  MOE_CHECK(!replicated || route == comm);
  MOE_CHECK(route->size() % comm->size() == 0);
  if (route->size() == 1 || c.n_experts <= 0 || c.top_k <= 0) return;
  const int P = route->size(), E = c.n_experts;
  comm_check_same(*route,
                  strfmt("%d %d %d %d %d %d %d %d %d", c.n_layers, c.hidden, c.vocab, E, c.top_k,
                         c.expert_ffn, c.shared_ffn, static_cast<int>(c.router.kind), s->N_max),
                  "model configuration (layers, widths, experts, router) or batch");
  const int Nr_max = replicated ? s->N_max : s->N_max * P;
  routing_buffers_init(s, c, Nr_max, s->train);
  const int A = std::max(Nr_max * std::max(c.top_k, 1), E);
  s->ep = comm;
  s->ep_route = route;
  s->ep_replicated = replicated;
  s->ep_dispatcher = std::make_shared<EpDispatcher>(comm, E, c.hidden, A, A);
  s->dispatcher = s->ep_dispatcher.get();
  dispatch_plan_init(&s->own, s->N_max, E, A);
  s->ep_tokens.assign(P, 0);
  s->ep_bytes.assign(P, 0);
  s->lbuf.assign(replicated ? 0 : static_cast<size_t>(s->N_max) * E, 0.0f);
  s->gids.assign(replicated ? 0 : Nr_max, 0);
  s->adv_all.assign(replicated || c.router.kind != ROUTER_REINFORCE ? 0 : Nr_max, 0.0f);
}

void mlp_forward(float* out, const MlpWeights& w, const float* x, int T, float* g, float* u,
                 LinearScratch* ls) {
  const Backend& be = backend();
  const int F = w.gate.out;
  be.linear(g, x, w.gate, T, ls);
  be.linear(u, x, w.up, T, ls);
  be.swiglu(g, g, u, static_cast<int64_t>(T) * F);
  be.linear(out, g, w.down, T, ls);
}

namespace {

// The noisy top-k router's (E, D) noise projection as a linear layer.
Linear noise_linear(const float* w, int E, int D) {
  Linear l;
  l.w = w;
  l.out = E;
  l.in = D;
  return l;
}

bool learned_router(const RouterSpec& spec) {
  return spec.kind != ROUTER_HASH && spec.kind != ROUTER_RANDOM;
}

// Each token's (K) experts and weights into s->idx / s->w: the assignments as routed for a fixed
// K; for expert choice the K highest-weight ones (ties: the lower expert, which comes first in
// assignment order), padded with -1 / 0.
void summarize_routing(const ModelConfig& c, MoeState* s) {
  const Routing& r = s->routing;
  const int N = r.N, K = c.top_k;
  if (c.router.kind != ROUTER_EXPERT_CHOICE) {
    MOE_CHECK(r.A == N * K);
    std::copy(r.expert.begin(), r.expert.begin() + r.A, s->idx.begin());
    std::copy(r.w.begin(), r.w.begin() + r.A, s->w.begin());
    return;
  }
  const DispatchPlan& p = s->plan;
  for (int t = 0; t < N; ++t) {
    int32_t* it = s->idx.data() + static_cast<int64_t>(t) * K;
    float* wt = s->w.data() + static_cast<int64_t>(t) * K;
    std::fill(it, it + K, -1);
    std::fill(wt, wt + K, 0.0f);
    int n = 0;
    for (int j = p.tok_off[t]; j < p.tok_off[t + 1]; ++j) {
      const int32_t a = p.tok_asg[j];
      int q = n < K ? n++ : K;
      while (q > 0 && wt[q - 1] < r.w[a]) {
        if (q < K) {
          it[q] = it[q - 1];
          wt[q] = wt[q - 1];
        }
        --q;
      }
      if (q < K) {
        it[q] = r.expert[a];
        wt[q] = r.w[a];
      }
    }
  }
}

// This rank's share of the call's tokens: s->Nr tokens routed, its own from s->t0 (see MoeState).
void share_tokens(MoeState* s, int N) {
  s->N = N;
  if (!s->ep) {
    s->Nr = N;
    s->t0 = 0;
    return;
  }
  const int P = s->ep_route->size(), r = s->ep_route->rank();
  if (s->ep_replicated) {
    s->Nr = N;
    for (int q = 0; q < P; ++q)
      s->ep_tokens[q] = static_cast<int64_t>(N) * (q + 1) / P - static_cast<int64_t>(N) * q / P;
    s->t0 = static_cast<int>(static_cast<int64_t>(N) * r / P);
    return;
  }
  std::fill(s->ep_tokens.begin(), s->ep_tokens.end(), 0);
  s->ep_tokens[r] = N;
  s->ep_route->allreduce(s->ep_tokens.data(), P, ReduceType::I64, ReduceOp::SUM);
  int64_t t0 = 0, Nr = 0;
  for (int q = 0; q < P; ++q) {
    if (q < r) t0 += s->ep_tokens[q];
    Nr += s->ep_tokens[q];
  }
  if (Nr > static_cast<int64_t>(s->N_max) * P)
    fail("expert parallelism: the ranks' calls hold %lld tokens in all, more than the %lld the "
         "layer was sized for", static_cast<long long>(Nr),
         static_cast<long long>(s->N_max) * P);
  s->Nr = static_cast<int>(Nr);
  s->t0 = static_cast<int>(t0);
}

// Every rank's share of rows (s->ep_tokens[q] rows of `width` elements of `bytes` each), from this
// rank's `mine`, into `all` in rank order: the router inputs (data-parallel) or the layer's
// outputs (replicated).
void gather_rows(MoeState* s, const void* mine, void* all, int64_t width, int64_t bytes) {
  Comm* c = s->ep_route;
  for (int q = 0; q < c->size(); ++q) s->ep_bytes[q] = s->ep_tokens[q] * width * bytes;
  c->allgatherv(mine, s->ep_bytes[c->rank()], all, s->ep_bytes.data());
}

// Router logits and routing of the call: of every routed token (s->Nr, from s->t0 this rank's).
void route(MoeState* s, const ModelConfig& c, const LayerWeights& lw, const float* x, int N,
           const MoeCall& call) {
  const RouterSpec& spec = c.router;
  const int D = c.hidden, E = c.n_experts;
  if (spec.kind == ROUTER_HASH && !call.ids)
    fail("hash routing needs the token ids: the MoE layer was called without them");
  const Backend& be = backend();
  const bool learned = learned_router(spec);
  const bool noisy = spec.kind == ROUTER_NOISY_TOPK && call.train;
  const bool gather = s->ep && !s->ep_replicated;
  const int32_t* ids = call.ids;
  if (learned) {
    be.linear(gather ? s->lbuf.data() : s->logits.data(), x, lw.router, N, &s->lin);
    if (gather) gather_rows(s, s->lbuf.data(), s->logits.data(), E, sizeof(float));
  }
  if (noisy) {
    MOE_CHECK(call.w_noise && !s->nlogits.empty());
    be.linear(gather ? s->lbuf.data() : s->nlogits.data(), x, noise_linear(call.w_noise, E, D), N,
              &s->lin);
    if (gather) gather_rows(s, s->lbuf.data(), s->nlogits.data(), E, sizeof(float));
  }
  if (gather && ids) {
    gather_rows(s, ids, s->gids.data(), 1, sizeof(int32_t));
    ids = s->gids.data();
  }
  const float cf = call.losses ? call.losses->capacity_factor : 0.0f;
  be.route(&s->routing, spec, learned ? s->logits.data() : nullptr, lw.e_bias,
           noisy ? s->nlogits.data() : nullptr, ids, s->Nr, cf, call.seed, call.train, call.pos);
}

// Shared expert(s), computed: sy (N, D) = FFN_shared(x), sgate (N) its gate logits.
void shared_compute(MoeState* s, const ModelConfig& c, const LayerWeights& lw, const float* x,
                    int N) {
  const Backend& be = backend();
  const int S = c.shared_ffn;
  float* h = s->train ? s->sact.data() : s->hg.data();
  be.linear(s->hg.data(), x, lw.shared.gate, N, &s->lin);
  be.linear(s->hu.data(), x, lw.shared.up, N, &s->lin);
  be.swiglu(h, s->hg.data(), s->hu.data(), static_cast<int64_t>(N) * S);
  be.linear(s->sy.data(), h, lw.shared.down, N, &s->lin);
  if (c.shared_gate) be.linear(s->sgate.data(), x, lw.shared_gate, N, &s->lin);
}

// out (N, D) += gate_t * sy_t.
void shared_add(float* out, const MoeState* s, const ModelConfig& c, int N) {
  const int D = c.hidden;
  for (int t = 0; t < N; ++t) {
    const float gt = c.shared_gate ? op_sigmoid(s->sgate[t]) : 1.0f;
    float* o = out + static_cast<int64_t>(t) * D;
    const float* y = s->sy.data() + static_cast<int64_t>(t) * D;
    for (int i = 0; i < D; ++i) o[i] += gt * y[i];
  }
}

// The losses of every routed token (s.Nr): the same value on every rank.
MoeLosses router_losses(const MoeState& s, const ModelConfig& c, const MoeCall& call) {
  const int N = s.Nr;
  MoeLosses L;
  const MoeLossSpec* ls = call.losses;
  const RouterSpec& spec = c.router;
  if (!ls || !learned_router(spec)) return L;
  const Backend& be = backend();
  const Routing& r = s.routing;
  if (ls->aux > 0) L.aux = be.aux_loss(r, spec, ls->aux, 0.0f, nullptr);
  if (ls->z > 0) L.z = be.z_loss(s.logits.data(), N, c.n_experts, ls->z, 0.0f, nullptr);
  if (ls->seq_aux > 0) L.seq_aux = be.seq_aux_loss(r, spec, call.seq_len, ls->seq_aux, 0.0f, nullptr);
  if (ls->device > 0) L.device = be.device_loss(r, spec, ls->n_devices, ls->device, 0.0f, nullptr);
  if (ls->comm > 0)
    L.comm = be.comm_loss(r, spec, ls->n_devices, ls->comm_devices, ls->comm, 0.0f, nullptr);
  return L;
}

}  // namespace

MoeLosses moe_layer_forward(float* out, MoeState* s, const ModelConfig& c, const LayerWeights& lw,
                            const float* x, int N, const MoeCall& call) {
  MOE_CHECK(N > 0 && N <= s->N_max);
  MOE_CHECK(c.n_experts > 0 && c.top_k > 0);
  const int D = c.hidden;
  share_tokens(s, N);
  // 1. Route (every routed token), 2. plan, 3. dispatch, 4. experts, 5. combine.
  route(s, c, lw, x, N, call);
  dispatch_plan_build(&s->plan, s->routing);
  summarize_routing(c, s);
  // This rank's tokens: all of x (one process, data-parallel) or its share (replicated).
  const int64_t mine0 = s->ep_replicated ? s->t0 : 0;
  const int n = s->ep_replicated ? static_cast<int>(s->ep_tokens[s->ep_route->rank()]) : N;
  const DispatchPlan* own = &s->plan;
  if (s->ep) {
    dispatch_plan_build_range(&s->own, s->routing, s->t0, s->t0 + n);
    own = &s->own;
  }
  const float* xm = x + mine0 * D;
  float* om = out + mine0 * D;
  const bool shared = c.shared_ffn > 0 && n > 0;
  Dispatcher& d = *s->dispatcher;
  if (s->ep_dispatcher) {  // 6. the shared expert(s) run while the rows travel
    s->ep_dispatcher->dispatch_begin(*own, xm, D);
    if (shared) shared_compute(s, c, lw, xm, n);
    s->seg = s->ep_dispatcher->dispatch_end(s->ex.xs.data());
  } else {
    s->seg = d.dispatch(*own, xm, D, s->ex.xs.data());
    if (shared) shared_compute(s, c, lw, xm, n);
  }
  const ExpertWeights* experts = lw.experts.data();
  if (s->xcache && !s->ep && !s->train) {
    s->xw.resize(c.n_experts);  // sized on the first cached call, reused after
    expert_cache_bind(s->xcache, s->xcache_layer, experts, s->seg, s->xw.data(), s->idx.data(),
                      N, c.top_k);
    experts = s->xw.data();
  }
  backend().experts(&s->ex, expert_ffn_spec(c), experts, s->seg, s->train);
  d.combine(*own, s->routing.w.data(), s->ex.ys.data(), D, om);
  if (shared) shared_add(om, s, c, n);
  if (s->ep_replicated) gather_rows(s, om, out, D, sizeof(float));
  return router_losses(*s, c, call);
}

namespace {

// Router backward: combine-weight gradients plus the balancing losses, then the router linears;
// dx (N, D) accumulates.
void router_backward_all(float* dx, MoeState* s, const ModelConfig& c, const LayerWeights& lw,
                         const LayerWeights& grads, float* g_noise, const float* x,
                         const MoeCall& call, float loss_scale) {
  const RouterSpec& spec = c.router;
  if (!learned_router(spec)) return;
  // dlogits of every routed token (the losses are global), of which this rank's rows from t0.
  const int N = s->N, Nr = s->Nr, D = c.hidden, E = c.n_experts;
  const int64_t ND = static_cast<int64_t>(N) * D, own = static_cast<int64_t>(s->t0) * E;
  auto wr = [](const float* p) { return const_cast<float*>(p); };  // gradient arenas are writable
  const Backend& be = backend();
  const Routing& r = s->routing;
  float* dl = s->dlogits.data();
  be.route_backward(r, spec, s->dw.data(), dl, s->dnlogits.data());
  if (const MoeLossSpec* ls = call.losses) {
    if (ls->aux > 0) be.aux_loss(r, spec, ls->aux, loss_scale, dl);
    if (ls->z > 0) be.z_loss(s->logits.data(), Nr, E, ls->z, loss_scale, dl);
    if (ls->seq_aux > 0) be.seq_aux_loss(r, spec, call.seq_len, ls->seq_aux, loss_scale, dl);
    if (ls->device > 0) be.device_loss(r, spec, ls->n_devices, ls->device, loss_scale, dl);
    if (spec.kind == ROUTER_REINFORCE) {
      // Data-parallel ranks route every rank's tokens: the advantages of all of them, in rank
      // order as the routed rows (each rank's are already normalised over the global batch).
      const float* adv = call.adv;
      if (adv && s->ep && !s->ep_replicated) {
        gather_rows(s, adv, s->adv_all.data(), 1, sizeof(float));
        adv = s->adv_all.data();
      }
      be.reinforce_grad(r, spec, adv, ls->rl_entropy, loss_scale, dl);
    }
    if (ls->comm > 0)
      be.comm_loss(r, spec, ls->n_devices, ls->comm_devices, ls->comm, loss_scale, dl);
  }
  be.linear_backward(s->tmp.data(), wr(grads.router.w), wr(grads.router.b), dl + own, x,
                     lw.router.w, N, E, D);
  be.add(dx, s->tmp.data(), ND);
  if (spec.kind == ROUTER_NOISY_TOPK && call.w_noise) {
    be.linear_backward(s->tmp.data(), g_noise, nullptr, s->dnlogits.data() + own, x, call.w_noise,
                       N, E, D);
    be.add(dx, s->tmp.data(), ND);
  }
}

// Shared expert(s) backward: out += gate_t * y_t; dx (N, D) accumulates.
void shared_backward(float* dx, MoeState* s, const ModelConfig& c, const LayerWeights& lw,
                     const LayerWeights& grads, const float* x, const float* dout) {
  const int N = s->N, D = c.hidden, S = c.shared_ffn;
  const int64_t ND = static_cast<int64_t>(N) * D;
  auto wr = [](const float* p) { return const_cast<float*>(p); };
  float* dy = s->tmp.data();  // (N, D)
  for (int t = 0; t < N; ++t) {
    const float* go = dout + static_cast<int64_t>(t) * D;
    float* dyt = dy + static_cast<int64_t>(t) * D;
    if (!c.shared_gate) {
      std::copy(go, go + D, dyt);
      continue;
    }
    const float gt = op_sigmoid(s->sgate[t]);
    const float* y = s->sy.data() + static_cast<int64_t>(t) * D;
    float dgate = 0.0f;
    for (int i = 0; i < D; ++i) {
      dgate += go[i] * y[i];
      dyt[i] = gt * go[i];
    }
    s->dsgate[t] = dgate * gt * (1.0f - gt);
  }
  if (c.shared_gate) {  // dx += dgate_logit * w_gate; dW_gate += dgate_logit^T x
    float* gg = wr(grads.shared_gate.w);
    for (int t = 0; t < N; ++t) {
      const float dgl = s->dsgate[t];
      const float* xt = x + static_cast<int64_t>(t) * D;
      float* d = dx + static_cast<int64_t>(t) * D;
      for (int i = 0; i < D; ++i) {
        d[i] += dgl * lw.shared_gate.w[i];
        gg[i] += dgl * xt[i];
      }
    }
  }
  const Backend& be = backend();
  be.linear_backward(s->dsact.data(), wr(grads.shared.down.w), nullptr, dy, s->sact.data(),
                     lw.shared.down.w, N, D, S);
  be.swiglu_backward(s->dsg.data(), s->dsu.data(), s->dsact.data(), s->hg.data(), s->hu.data(),
                     static_cast<int64_t>(N) * S);
  float* dxs = s->tmp2.data();  // (N, D)
  be.linear_backward(dxs, wr(grads.shared.gate.w), nullptr, s->dsg.data(), x, lw.shared.gate.w, N,
                     S, D);
  be.add(dx, dxs, ND);
  be.linear_backward(dxs, wr(grads.shared.up.w), nullptr, s->dsu.data(), x, lw.shared.up.w, N, S,
                     D);
  be.add(dx, dxs, ND);
}

}  // namespace

void moe_layer_backward(float* dx, MoeState* s, const ModelConfig& c, const LayerWeights& lw,
                        const LayerWeights& grads, float* g_noise, const float* x,
                        const float* dout, const MoeCall& call, float loss_scale) {
  MOE_CHECK(s->train && s->N > 0 && !s->ep_replicated);
  const int D = c.hidden;
  Dispatcher& d = *s->dispatcher;
  const DispatchPlan& own = s->ep ? s->own : s->plan;
  d.combine_backward(own, s->routing.w.data(), s->ex.ys.data(), dout, D, s->ex.dys.data(),
                     s->dw.data());
  backend().experts_backward(&s->ex, expert_ffn_spec(c), lw.experts.data(), grads.experts.data(),
                             s->seg);
  d.dispatch_backward(own, s->ex.dxs.data(), D, dx);
  router_backward_all(dx, s, c, lw, grads, g_noise, x, call, loss_scale);
  if (c.shared_ffn > 0) shared_backward(dx, s, c, lw, grads, x, dout);
}

}  // namespace moe
