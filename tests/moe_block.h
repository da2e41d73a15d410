// One MoE block's parameters and gradients in two flat arenas, with random weights, for tests of
// the MoE layer (gradient checks, expert parallelism).
#pragma once

#include <random>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace moe {

// Parameters and gradients of one MoE block, in two flat arenas with identical layouts.
struct Block {
  ModelConfig c;
  std::vector<float> p, g;  // params, grads
  LayerWeights w, gw;
  size_t noise = 0;          // offset of the noisy router's (E, D) projection
  std::vector<std::pair<size_t, size_t>> ranges;  // (offset, size) of each tensor

  size_t take(size_t n) {
    size_t o = p.size();
    p.resize(o + n);
    ranges.push_back({o, n});
    return o;
  }
  // oai: gpt-oss's clamped SwiGLU (limit 1.5, so some activations clamp), expert biases and a
  // router bias.
  Block(RouterSpec spec, int shared, bool gate, bool oai = false, int n_experts = 4) {
    c.hidden = 6;
    c.n_experts = n_experts;
    c.top_k = 2;
    c.expert_ffn = 5;
    c.shared_ffn = shared;
    c.shared_gate = gate;
    c.router = spec;
    if (oai) {
      c.act = ACT_SWIGLU_OAI;
      c.act_limit = 1.5f;
      c.expert_bias = true;
      c.router.has_bias = true;
    }
    const int D = c.hidden, E = c.n_experts, F = c.expert_ffn, S = shared;
    struct Off { size_t gate, up, down, gb = 0, ub = 0, db = 0; };
    size_t r = take(E * D), eb = take(E), rb = oai ? take(E) : 0;
    noise = take(E * D);
    std::vector<Off> ex(E);
    for (auto& o : ex) {
      o = {take(F * D), take(F * D), take(D * F)};
      if (oai) o.gb = take(F), o.ub = take(F), o.db = take(D);
    }
    size_t sgt = 0, sup = 0, sdn = 0, sg = 0;
    if (S) sgt = take(S * D), sup = take(S * D), sdn = take(D * S), sg = take(D);
    std::mt19937 gen(5);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    for (float& x : p) x = nd(gen);
    g.assign(p.size(), 0.0f);
    auto bind = [&](std::vector<float>& arena, LayerWeights& lw) {
      float* b = arena.data();
      lw.router = {b + r, oai ? b + rb : nullptr, E, D};
      lw.e_bias = spec.has_correction_bias ? b + eb : nullptr;
      lw.experts.resize(E);
      for (int e = 0; e < E; ++e) {
        lw.experts[e] = {b + ex[e].gate, b + ex[e].up, b + ex[e].down};
        if (oai) {
          lw.experts[e].gate_b = b + ex[e].gb;
          lw.experts[e].up_b = b + ex[e].ub;
          lw.experts[e].down_b = b + ex[e].db;
        }
      }
      if (S) {
        lw.shared.gate = {b + sgt, nullptr, S, D};
        lw.shared.up = {b + sup, nullptr, S, D};
        lw.shared.down = {b + sdn, nullptr, D, S};
        lw.shared_gate = {b + sg, nullptr, 1, D};
      }
    };
    bind(p, w);
    bind(g, gw);
  }
};

}  // namespace moe
