// One MoE layer's weights made once and fed, byte for byte, to both sides: moe.cpp's moe_forward
// (moe/moe_layer.h) and the llama.cpp MoE graph (peer_graph.h).
//
// Weights are random, N(0, 0.02) rows (random_normal_row of model/checkpoint_write.h), stored in
// ggml's layout: gate_exps, up_exps (E x F rows of D), down_exps (E x D rows of F) quantized with
// moe.cpp's writers (quantize_row: bit-compatible with ggml's block_q4_0 / q8_0 / q4_K / q6_K,
// checked at start against ggml's own dequantization); the shared expert in the same type; the
// router, its biases and the shared gate in fp32 (llama.cpp's converter keeps ffn_gate_inp fp32).
// moe.cpp binds each expert to its rows of those buffers (raw, as from a memory-mapped file);
// ggml copies them into its buffers (repacked where llama.cpp would repack them).
//
// Legend: T tokens, D hidden, F expert width, Fs shared width, E experts, K top-k.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "peer_graph.h"
#include "quant/quant.h"

namespace peer {

struct HostBuf {
  std::unique_ptr<uint8_t[]> p;
  int64_t n = 0;
  uint8_t* data() const { return p.get(); }
};

struct HostLayer {
  moe::QType type = moe::QT_F32;
  int D = 0, F = 0, E = 0, K = 0, Fs = 0;
  HostBuf router, router_b, sel_b;             // (E, D), (E), (E) fp32
  HostBuf gate_exps, up_exps, down_exps;       // (E*F, D), (E*F, D), (E*D, F) as type
  HostBuf sh_gate, sh_up, sh_down, sh_gate_inp;  // (Fs, D), (Fs, D), (D, Fs) as type; (D) fp32
  int64_t expert_bytes = 0;                    // one routed expert's three matrices
  int64_t dense_bytes = 0;                     // router + biases + shared expert
  moe::LayerWeights lw;                        // moe.cpp's view of the same bytes
};

// The ggml type of a moe.cpp type; false if ggml has none.
bool ggml_type_of(moe::QType t, ggml_type* out);
// Throws std::runtime_error if the config has a layer the peer graph does not express (expert
// choice or other non-token-choice routers, group-limited routing, gpt-oss's activation, expert
// biases).
PeerSpec peer_spec_of(const moe::ModelConfig& c, int threads);
void host_layer_build(HostLayer* L, const moe::ModelConfig& c, moe::QType t, uint64_t seed);
PeerWeights peer_weights_of(const HostLayer& L);
// Dequantizes a few rows of each quantized buffer with ggml's to_float and moe.cpp's
// dequantize_row and throws unless they agree bit for bit. Returns the rows checked.
int check_same_bytes(const HostLayer& L);

}  // namespace peer
