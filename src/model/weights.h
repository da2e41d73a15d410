// Model weights: fp32 views bound by name from a checkpoint, validated against the config.
//
// F32 tensors are used in place from the memory map (zero-copy when 4-byte aligned); BF16/F16
// tensors and layouts that need rearranging (gpt-oss's transposed, interleaved experts) are
// converted once at load into buffers owned by the Model. Every tensor of the checkpoint must be
// consumed: a missing or unexpected tensor, or a shape that disagrees with config.json, is an error
// naming the file and the tensor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace moe {

// y = x W^T + b. w: (out, in) row-major; b: (out) or null.
struct Linear {
  const float* w = nullptr;
  const float* b = nullptr;
  int out = 0, in = 0;
};

// One routed expert. gate, up: (F, D); down: (D, F). Biases (gpt-oss) may be null.
struct ExpertWeights {
  const float* gate = nullptr;
  const float* up = nullptr;
  const float* down = nullptr;
  const float* gate_b = nullptr;  // (F)
  const float* up_b = nullptr;    // (F)
  const float* down_b = nullptr;  // (D)
};

// A dense SwiGLU MLP: down(silu(gate x) * up x).
struct MlpWeights {
  Linear gate, up, down;
};

struct LayerWeights {
  const float* attn_norm = nullptr;  // (D)
  const float* ffn_norm = nullptr;   // (D)

  // GQA attention
  Linear q, k, v, o;                 // q: (H*hd, D), k/v: (KV*hd, D), o: (D, H*hd)
  const float* q_norm = nullptr;     // (hd) per head, or (H*hd) full
  const float* k_norm = nullptr;     // (hd) per head, or (KV*hd) full
  const float* sinks = nullptr;      // (H)

  // MLA attention (DeepSeek)
  Linear q_a, q_b;                   // q_a: (q_lora, D), q_b: (H*(nope+rope), q_lora); or q above
  const float* q_a_norm = nullptr;   // (q_lora)
  Linear kv_a;                       // (kv_lora + rope, D)
  const float* kv_a_norm = nullptr;  // (kv_lora)
  Linear kv_b;                       // (H*(nope+dv), kv_lora)

  // Dense FFN
  MlpWeights mlp;

  // MoE FFN
  Linear router;                        // (E, D), bias (E) for gpt-oss
  Linear router_noise;                  // (E, D) noisy top-k's noise projection
  const float* e_bias = nullptr;        // (E) selection-only correction bias
  std::vector<ExpertWeights> experts;   // [E]
  MlpWeights shared;                    // shared expert(s), out = 0 if none
  Linear shared_gate;                   // (1, D) Qwen2-MoE
};

struct Model {
  ModelConfig cfg;
  StArchive archive;
  std::vector<std::unique_ptr<float[]>> owned;  // converted tensors
  const float* embed = nullptr;                 // (V, D)
  const float* final_norm = nullptr;            // (D)
  const float* lm_head = nullptr;               // (V, D); == embed when tied
  std::vector<LayerWeights> layers;             // [L]
  bool fused_experts = false;                   // checkpoint stores 3-D expert tensors
  int64_t n_params = 0;                         // parameters used by the forward pass
  int64_t weight_bytes = 0;                     // bytes of those parameters as stored
};

// Loads config.json, generation_config.json and the safetensors weights of a checkpoint folder.
void model_load(Model* m, const std::string& dir);

// Binds m->cfg against the tensors already in m->archive (a checkpoint, or an in-memory arena
// whose StTensors point at F32 buffers). Validates as model_load does.
void model_bind(Model* m);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a Hugging Face checkpoint of this config holds, in load order: per-expert 2-D
// expert tensors (the hub layout), or fused 3-D ones if fused_experts (gpt-oss is always fused).
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& cfg, bool fused_experts);

}  // namespace moe
