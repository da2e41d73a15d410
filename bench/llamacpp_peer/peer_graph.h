// The peer: the MoE FFN graph that llama.cpp builds (llm_graph_context::build_moe_ffn in its
// src/llama-graph.cpp, plus the shared expert of Qwen2-MoE / DeepSeek), rebuilt op for op with
// ggml and run on ggml's CPU backend, with every weight placed as llama.cpp places it by default:
// in the first of the CPU device's extra buffer types (AMX, repacked layouts) whose supports_op
// accepts the op that uses the weight, else in the plain CPU buffer type.
//
// The graph for T tokens, x (D, T) fp32 (ggml order: ne0 first):
//   logits (E, T) = mul_mat(router, x) [+ router bias]
//   probs = soft_max(logits) | sigmoid(logits) | logits (softmax over the selected, gpt-oss style)
//   selected (K, T) = argsort_top_k(probs [+ selection bias], K)
//   weights (1, K, T) = get_rows(probs, selected) [soft_max] [/ clamp(sum, 2^-14)] [* scale]
//   gate, up (F, K, T) = mul_mat_id(gate_exps | up_exps, x, selected); h = swiglu_split(gate, up)
//   experts (D, K, T) = mul_mat_id(down_exps, h, selected) * weights
//   out (D, T) = sum over the K views of experts (a chain of adds, as llama.cpp)
//   [+ down_shexp(swiglu_split(gate_shexp x, up_shexp x)) [* sigmoid(gate_inp_shexp x)]]
// ggml itself is not part of this repository: bench/llamacpp_peer/run.sh builds a pinned commit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace peer {

// The layer's shape and routing (what build_moe_ffn takes as arguments).
struct PeerSpec {
  int D = 0, F = 0, E = 0, K = 0, Fs = 0;  // hidden, expert width, experts, top-k, shared width
  enum Gating { SOFTMAX, SIGMOID, SOFTMAX_WEIGHT } gating = SOFTMAX;
  bool router_bias = false;    // (E) added to the logits
  bool selection_bias = false; // (E) added to probs for the selection only (DeepSeek-V3)
  bool norm_w = false;         // renormalise the K weights
  float w_scale = 1.0f;        // routed scaling factor
  bool shared_gate = false;    // sigmoid gate on the shared expert (Qwen2-MoE)
  int threads = 1;
};

// Host bytes of every weight, in ggml's layout (rows of ne0 = the input width): router (E, D)
// fp32; gate_exps, up_exps (E x F rows of D) and down_exps (E x D rows of F) as `type`; shared
// gate/up (Fs rows of D), down (D rows of Fs) as shared_type; shared gate input (D) fp32.
struct PeerWeights {
  ggml_type type = GGML_TYPE_F32, shared_type = GGML_TYPE_F32;
  const void* router = nullptr;
  const void* router_b = nullptr;
  const void* sel_b = nullptr;
  const void* gate_exps = nullptr;
  const void* up_exps = nullptr;
  const void* down_exps = nullptr;
  const void* sh_gate = nullptr;
  const void* sh_up = nullptr;
  const void* sh_down = nullptr;
  const void* sh_gate_inp = nullptr;
};

// The weights on the CPU backend, each in the buffer type llama.cpp would choose.
struct PeerLayer {
  PeerSpec spec;
  ggml_backend_dev_t dev = nullptr;
  ggml_backend_t backend = nullptr;
  std::vector<ggml_context*> ctxs;           // one per buffer type used
  std::vector<ggml_backend_buffer_t> bufs;   // one per buffer type used
  ggml_tensor *router = nullptr, *router_b = nullptr, *sel_b = nullptr;
  ggml_tensor *gate_exps = nullptr, *up_exps = nullptr, *down_exps = nullptr;
  ggml_tensor *sh_gate = nullptr, *sh_up = nullptr, *sh_down = nullptr, *sh_gate_inp = nullptr;
  std::vector<std::string> placement;        // "tensor: buffer type" for the report
};

// One graph for T tokens, allocated once and computed any number of times.
struct PeerGraph {
  int T = 0;
  ggml_context* ctx = nullptr;
  ggml_cgraph* gf = nullptr;
  ggml_gallocr_t galloc = nullptr;
  ggml_tensor* x = nullptr;         // (D, T) input
  ggml_tensor* out = nullptr;       // (D, T)
  ggml_tensor* selected = nullptr;  // (K, T) int32 expert ids
  ggml_tensor* weights = nullptr;   // (1, K, T) combine weights
};

// Creates the CPU backend with spec.threads threads, places and uploads the weights (repacking
// happens in the upload, as when llama.cpp loads a model). Throws std::runtime_error.
void peer_layer_init(PeerLayer* L, const PeerSpec& spec, const PeerWeights& w);
void peer_layer_free(PeerLayer* L);

void peer_graph_build(PeerGraph* g, const PeerLayer& L, int T);
void peer_graph_free(PeerGraph* g);
// x (T, D) row-major fp32 into the graph's input.
void peer_graph_set_input(PeerGraph* g, const float* x);
// Runs the graph; throws on a backend error.
void peer_graph_compute(const PeerLayer& L, PeerGraph* g);
// Reads back out (T, D), selected (T, K) and weights (T, K).
void peer_graph_read(const PeerGraph& g, float* out, int32_t* selected, float* weights);

}  // namespace peer
