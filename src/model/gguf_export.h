// A model as a GGUF file in llama.cpp's layout (the inverse of model/gguf_model.h), so a model
// trained here runs in llama.cpp: general.architecture and its hyperparameter keys, llama.cpp's
// tensor names, routed experts stacked into ffn_{gate,up,down}_exps (E, rows, cols), Q/K rows
// permuted for the llama architecture's rope. Matrices keep their stored type (F32, BF16, Q8_0,
// Q4_0 or a GGUF type), copied row by row; everything else is F32.
//
// Architectures: qwen3_moe, qwen2_moe, olmoe, mixtral, deepseek_v2 / deepseek_v3 (deepseek2: MLA
// with kv_b_proj split into attn_k_b / attn_v_b and the MQA key lengths, as llama.cpp's converter
// writes them) and gpt_oss (others, and features llama.cpp lacks: a one-line error naming the
// model_type or feature). The tokenizer (tokenizer.ggml.*, text/gguf_tokenizer_write.h) and the chat template
// come from the checkpoint folder's tokenizer.json and tokenizer_config.json, which llama.cpp
// needs to run the file. The whole model is assembled in memory before it is written
// (atomically).
#pragma once

#include <string>

#include "model/weights.h"

namespace moe {

// Writes m (as loaded by model_load) to `path`, with the tokenizer of tokenizer_dir (its
// tokenizer.json; none when tokenizer_dir is "" or has no tokenizer.json). Returns whether a
// tokenizer was written.
bool gguf_export(const Model& m, const std::string& path, const std::string& tokenizer_dir = "");

}  // namespace moe
