// The CPU backend: the kernels of ops.h, linear.h, router.h and experts.h.
#include "ops/backend.h"

#include "ops/ops.h"

namespace moe {

namespace {

void cpu_linear(float* y, const float* x, const Linear& w, int T, LinearScratch* s) {
  linear_forward(y, x, w, T, s);
}

const Backend kCpu = {
    "cpu",
    op_gemm,
    cpu_linear,
    op_linear,
    op_linear_backward,
    op_add,
    op_clamp,
    op_clamp_backward,
    op_swiglu,
    op_swiglu_backward,
    op_rmsnorm,
    op_rmsnorm_backward,
    op_rope_table,
    op_rope,
    op_rope_backward,
    op_attention_scratch,
    op_attention,
    op_attention_backward,
    op_mla_attention,
    router_forward,
    router_backward,
    router_aux_loss,
    router_z_loss,
    router_seq_aux_loss,
    router_device_loss,
    router_reinforce_grad,
    router_comm_loss,
    experts_forward,
    experts_backward,
    op_adamw,
    op_cross_entropy,
};

const Backend* g_selected = &kCpu;

}  // namespace

const Backend& backend_cpu() { return kCpu; }

std::vector<const Backend*> backends_registered() { return {&kCpu}; }

const Backend& backend() { return *g_selected; }

void backend_select(const Backend& b) { g_selected = &b; }

}  // namespace moe
