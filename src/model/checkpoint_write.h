// Writing checkpoints in the format model/weights.h reads: quantized copies of a checkpoint
// (`moe quantize`) and random-weight checkpoints of any supported config (`moe init`).
//
// Both write one model.safetensors (whatever the input's sharding) with the tensors of
// model_tensor_specs, streamed tensor by tensor in row chunks, so neither needs the model in
// memory. The output folder appears atomically: everything is written into a temp folder beside
// it, which is renamed into place at the end; an error removes it and leaves nothing behind.
// An existing output path is an error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "model/weights.h"
#include "quant/quant.h"

namespace moe {

struct CkptWriteStats {
  int64_t bytes_in = 0;   // weight bytes read (quantize: the tensors the engine uses)
  int64_t bytes_out = 0;  // weight bytes written
  int n_tensors = 0;      // tensors written
  int n_converted = 0;    // of those, stored in the requested type
  int n_dropped = 0;      // input tensors the engine does not use (e.g. rotary inv_freq), skipped
};

// How a tensor is stored under `--type t`: t, or QT_F32 for "as it is" (the input's dtype when
// quantizing, F32 when initialising). Routed experts take t, and so do attention, dense and
// shared-expert matrices unless experts_only; so does an untied lm_head unless experts_only,
// except that q4_0 stores it as q8_0 and q4_k / q5_k as q6_k (the output matrix is the most
// sensitive to rounding, and llama.cpp also keeps it at a higher precision, as its Q4_K_M does).
// Embeddings, a tied lm_head, norms, biases, routers and sinks never do, and the block types also
// need an input axis that is a multiple of 32; the K-quants take one of 256, and a matrix whose
// input axis is a multiple of 32 only is stored as q8_0 instead.
QType ckpt_tensor_type(const TensorSpec& s, QType t, bool experts_only);

// Writes a copy of the checkpoint in in_dir to out_dir (config.json; generation_config.json,
// tokenizer.json, tokenizer_config.json and chat_template.jinja if present; model.safetensors) with tensors stored per ckpt_tensor_type. t: QT_BF16 or a
// qtype_is_written_block type (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). The input is validated as model_load would; an input that already holds Q8_0/Q4_0
// tensors is refused.
void ckpt_quantize(const std::string& in_dir, const std::string& out_dir, QType t,
                   bool experts_only, CkptWriteStats* stats);

struct InitOptions {
  QType type = QT_F32;  // storage of the weight matrices (ckpt_tensor_type, experts_only false)
  uint64_t seed = 0;
  bool fused = false;  // fused 3-D expert tensors (transformers 5 layout); gpt-oss always is
};

// Writes a random-weight checkpoint of the config.json at config_path to out_dir: config.json
// (copied verbatim), generation_config.json if one sits beside config_path, model.safetensors.
// Weights ~ N(0, 0.02) (a sum of four uniforms, exactly mean 0 and sd 0.02, bounded at 3.5 sd),
// norm weights 1, biases and sinks 0. Values depend only on the seed, the tensor name and the
// row, not on threads or chunking.
void ckpt_init_random(const std::string& config_path, const std::string& out_dir,
                      const InitOptions& opt, CkptWriteStats* stats);

// Row `row` of a random matrix keyed on (seed, key): cols values N(0, 0.02), each a scaled sum of
// four 16-bit uniforms (exactly mean 0 and sd 0.02, bounded at 3.5 sd), as ckpt_init_random
// writes them (its key is a hash of the tensor name).
void random_normal_row(uint64_t seed, uint64_t key, int64_t row, float* out, int64_t cols);

// Runs write(tmp) on a fresh temp folder beside `out`, then renames it to `out`. Fails if `out`
// exists or the temp folder cannot be made; on any error the temp folder is removed.
void write_dir_atomic(const std::string& out, const std::function<void(const std::string&)>& write);

}  // namespace moe
