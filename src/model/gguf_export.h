// A model as a GGUF file in llama.cpp's layout (the inverse of model/gguf_model.h), so a model
// trained here runs in llama.cpp: general.architecture and its hyperparameter keys, llama.cpp's
// tensor names, routed experts stacked into ffn_{gate,up,down}_exps (E, rows, cols), Q/K rows
// permuted for the llama architecture's rope. Matrices keep their stored type (F32, BF16, Q8_0,
// Q4_0 or a GGUF type), copied row by row; everything else is F32.
//
// Architectures: qwen3_moe, qwen2_moe, olmoe, mixtral (others: a one-line error naming the
// model_type). The tokenizer is not written: llama.cpp needs tokenizer.ggml.* to run the file.
// The whole model is assembled in memory before it is written (atomically).
#pragma once

#include <string>

#include "model/weights.h"

namespace moe {

// Writes m (as loaded by model_load) to `path`.
void gguf_export(const Model& m, const std::string& path);

}  // namespace moe
