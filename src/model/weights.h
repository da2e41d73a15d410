// Model weights: fp32 views bound by name from a checkpoint, validated against the config.
//
// F32 tensors are used in place from the memory map (zero-copy when 4-byte aligned); BF16/F16
// tensors and layouts that need rearranging (gpt-oss's transposed, interleaved experts) are
// converted once at load into buffers owned by the Model. Every tensor of the checkpoint must be
// consumed: a missing or unexpected tensor, or a shape that disagrees with config.json, is an error
// naming the file and the tensor.
//
// Routed-expert matrices, the attention, dense-MLP and shared-expert matrices and the untied
// lm_head (TR_EXPERT, TR_LINEAR and TR_OUTPUT below) stored as BF16, Q8_0 or Q4_0 are not
// converted: they stay in the memory map, ExpertWeights / Linear / Model::lm_head_q point at the
// raw rows (QWeight), and moe_forward / linear_forward run them directly. The exception is MLA's
// kv_b_proj, which is dequantized: the absorbed attention multiplies fp32 slices of it.
// Any other quantized tensor is dequantized to fp32 once at load (it saves disk, not memory).
//
// Quantized checkpoints (format version 1; written by `moe quantize` and `moe init`):
// - A Q8_0 / Q4_0 tensor keeps its Hugging Face name and is stored with dtype U8 and shape
//   [rows, row_bytes]: each row is one run of the reduction axis, quantized in 32-weight blocks
//   (quant/quant.h), row_bytes = cols / 32 * 34 (Q8_0) or * 18 (Q4_0); cols % 32 == 0.
// - The file's __metadata__ holds "moe.format_version": "1" and, per quantized tensor,
//   "moe.quant.<tensor name>": "<type>:<d0>,<d1>,...[:t]", type q8_0 or q4_0 and d0.. the
//   tensor's logical (Hugging Face) shape, e.g. "q4_0:4096,14336" for a [4096, 14336] weight.
//   Without ":t" rows run along the last logical axis: rows = d0 * ... * d(n-2), cols = d(n-1).
//   With ":t" (transposed) the last two logical axes are swapped in storage, so rows run along
//   the second-to-last axis: rows = d0 * ... * d(n-3) * d(n-1), cols = d(n-2). Only gpt-oss's
//   expert tensors, which Hugging Face stores as (E, in, out), are written that way.
// - BF16 tensors are plain safetensors BF16 (no metadata needed). "moe.quant_type" and
//   "moe.quant_scope" (experts | all) record how a checkpoint was written, for information only.
// The loader checks the version, the metadata syntax, the logical shape against config.json and
// the stored shape against the logical one, and names the file and tensor on any mismatch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "quant/quant.h"
#include "quant/weight_view.h"

namespace moe {

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

// One multi-token-prediction module (DeepSeek-V3; model.layers.{L+k}. in its checkpoints): the
// block is layers[L + k] of the Model, the rest is here. The module's input is
// eh_proj([enorm(embed(t_{i+k+1})); hnorm(h_i)]) (DeepSeek's order: embedding first), its logits
// head(shared_head.norm(block output)).
struct MtpWeights {
  const float* enorm = nullptr;      // (D)
  const float* hnorm = nullptr;      // (D)
  Linear eh_proj;                    // (D, 2D)
  const float* head_norm = nullptr;  // (D) shared_head.norm
  // DeepSeek-V3's hub files repeat the embedding and the output head in every module
  // (embed_tokens, shared_head.head); when a checkpoint omits them (moe.cpp writes them once),
  // these point at the main model's.
  const float* embed = nullptr;      // (V, D)
  const float* head = nullptr;       // (V, D); null when raw
  QWeight head_q;                    // (V, D) raw rows of a quantized head
};

struct ExpertCache;  // moe/expert_cache.h

struct Model {
  ModelConfig cfg;
  StArchive archive;
  std::vector<std::unique_ptr<float[]>> owned;  // converted tensors
  const float* embed = nullptr;                 // (V, D)
  const float* final_norm = nullptr;            // (D)
  const float* lm_head = nullptr;               // (V, D); == embed when tied; null when raw
  QWeight lm_head_q;                            // (V, D) raw rows of a quantized lm_head
  std::vector<LayerWeights> layers;             // [L + cfg.mtp_layers] (the MTP blocks last)
  std::vector<MtpWeights> mtp;                  // [cfg.mtp_layers]
  bool fused_experts = false;                   // checkpoint stores 3-D expert tensors
  int64_t n_params = 0;                         // parameters used by the forward pass
  int64_t weight_bytes = 0;                     // bytes of those parameters as stored
  // The hot-expert cache (expert_cache_attach), used by every forward of this model; null: none.
  std::shared_ptr<ExpertCache> expert_cache;
};

struct LoadOptions {
  bool dequantize = false;  // convert raw expert matrices (BF16, Q8_0, Q4_0) to fp32 at load
  bool no_data = false;     // validate names, shapes and dtypes only; bind no pointers and
                            // convert nothing (for tools that stream the tensors themselves)
  // The routed experts this process binds: [expert_begin, expert_end) of every MoE layer; the
  // others are validated but neither bound nor converted, so their bytes are never touched.
  // expert_end < 0: model_load takes this rank's block under expert parallelism (all of them in
  // one process; dist/placement.h).
  int expert_begin = 0, expert_end = -1;
};

// Loads config.json, generation_config.json and the safetensors weights of a checkpoint folder,
// or a .gguf file (model/gguf_model.h).
void model_load(Model* m, const std::string& dir, const LoadOptions& opt = {});

// Binds m->cfg against the tensors already in m->archive (a checkpoint, or an in-memory arena
// whose StTensors point at F32 buffers). Validates as model_load does.
void model_bind(Model* m, const LoadOptions& opt = {});

// The bytes of the routed experts' tensors as stored, and how many of those pages (plus any
// fp32 buffers converted from them) are resident in this process's memory now (/proc/self/pagemap).
struct ExpertMemory {
  int64_t stored = 0, resident = 0;
};
ExpertMemory model_expert_memory(const Model& m);

// What a tensor is, for choosing how to store it.
enum TensorRole {
  TR_OTHER,   // embeddings, tied lm_head, norms, biases, routers, sinks: kept as they are
  TR_LINEAR,  // attention, dense-MLP and shared-expert weight matrices (out, in)
  TR_EXPERT,  // routed-expert weight matrices
  TR_OUTPUT,  // the untied lm_head (V, D)
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role = TR_OTHER;
  bool in_major = false;  // stored (.., in, out): the reduction axis is shape[-2] (gpt-oss experts)
};

// Every tensor a Hugging Face checkpoint of this config holds, in load order: per-expert 2-D
// expert tensors (the hub layout), or fused 3-D ones if fused_experts (gpt-oss is always fused).
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& cfg, bool fused_experts);

}  // namespace moe
