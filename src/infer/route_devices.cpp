#include "infer/route_devices.h"

#include "core/error.h"
#include "dist/comm.h"

namespace moe {

void infer_route_devices(ModelConfig* c, int M, int D) {
  if (M <= 0) {
    if (M < 0) fail("--route-devices must be >= 0 (got %d)", M);
    return;
  }
  RouterSpec& r = c->router;
  const int E = c->n_experts, P = comm_ep().size();
  if (E <= 0 || c->top_k <= 0) fail("--route-devices: %s has no routed experts", c->path.c_str());
  if (r.kind != ROUTER_TOKEN_CHOICE || r.topk_then_softmax)
    fail("--route-devices: %s's router selects experts without groups (top-k-then-softmax or "
         "not token choice); device limits apply to softmax / sigmoid top-k routers",
         c->path.c_str());
  if (r.group != GROUP_NONE && r.n_group > 1)
    fail("--route-devices: %s already limits each token to %d of its %d expert groups "
         "(topk_group / n_group); the checkpoint's own limit applies", c->path.c_str(),
         r.topk_group, r.n_group);
  if (P > 1) {
    if (D != 0 && D != P)
      fail("--devices %d: under mpirun the devices are the %d ranks of the expert-parallel group",
           D, P);
    D = P;
  }
  if (D <= 1 || E % D)
    fail("--route-devices needs devices that split the %d experts evenly (--devices D in one "
         "process, or the ranks under mpirun; got %d)", E, D);
  if (D > 64) fail("--devices %d: at most 64 devices (routing groups)", D);
  if (M > D) fail("--route-devices %d exceeds the %d devices", M, D);
  if (M * (E / D) < c->top_k)
    fail("--route-devices %d: %d devices hold %d experts, fewer than the %d each token takes", M,
         M, M * (E / D), c->top_k);
  r.group = r.score == SCORE_SIGMOID && E / D >= 2 ? GROUP_TOP2_SUM : GROUP_MAX;
  r.n_group = D;
  r.topk_group = M;
}

}  // namespace moe
