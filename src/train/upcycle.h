// Sparse upcycling (Komatsuzaki et al. 2022; fine-grained and shared variants as in Qwen1.5-MoE,
// MiniCPM and NVIDIA's 2410.07524): turn a dense checkpoint's FFNs into MoE layers.
//
// The dense FFN (width F) is cut into G slices of width F/G along its hidden axis; since SwiGLU acts
// elementwise on that axis, the slices' outputs add up to the dense output exactly. Slices 0..S-1
// form an always-on shared expert; routed expert e is a copy of slice S + (e mod (G - S)).
// The router starts at zero, so at step 0 every expert scores the same, ties go to the lower index,
// and each token selects experts 0..K-1 with the weight w0 each (1/K renormalised, 1/E otherwise,
// times the routing scale). Each routed expert's down projection is multiplied by
// (G - S) / (K * w0), so the routed slices add up to the dense output.
//
// Function preservation at step 0 (before noise) is therefore exact, to float rounding, whenever
// K is a multiple of G - S (each slice is selected K / (G - S) times). Otherwise, or with a random
// router (--router-std > 0, except plain G = 1 upcycling with renormalised top-k, which is exact for
// any router), the upcycled model starts close to, but not at, the dense one.
#pragma once

#include <string>

namespace moe {

struct UpcycleParams {
  int experts = 8;
  int top_k = 2;
  int granularity = 1;   // G
  int shared = 0;        // S: slices carved out as one shared expert
  float noise = 0.0f;    // relative noise on the routed experts' weights
  bool renorm = true;    // renormalise the top-k weights
  float router_std = 0.0f;
  uint64_t seed = 1;
};

// Reads a dense checkpoint (every layer dense), writes the upcycled checkpoint to out_dir
// (config.json, generation_config.json, model.safetensors, tokenizer.json if present).
void upcycle(const std::string& dense_dir, const std::string& out_dir, const UpcycleParams& p);

}  // namespace moe
