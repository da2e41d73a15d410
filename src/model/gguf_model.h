// A model from a GGUF file (llama.cpp's format): the architecture's hyperparameters from the GGUF
// metadata become the config.json the engine reads (config_parse), and llama.cpp's tensor names
// are mapped to the Hugging Face names the binder (model/weights.h) takes, as views into the
// memory map: quantized tensors stay raw (U8 rows described by "moe.quant.<name>" entries, any
// GGUF type), 3-D expert tensors (ffn_{gate,up,down}_exps) become per-expert 2-D views.
//
// Architectures: qwen3moe, qwen2moe, olmoe, llama with experts (Mixtral). llama.cpp stores the
// llama architecture's Q and K rows permuted for its interleaved RoPE (convert_hf_to_gguf.py:
// within each head, row 2i + j holds the Hugging Face row j * hd/2 + i); those rows are put back
// in order at load (copied, quantized rows whole). Any other architecture, a tensor name this
// mapping does not know, or a missing key is a one-line error naming the file and the key or
// tensor.
#pragma once

#include <string>

#include "io/gguf.h"
#include "model/weights.h"

namespace moe {

// Loads a .gguf model (single or the first file of a split).
void gguf_model_load(Model* m, const std::string& path, const LoadOptions& opt = {});

// The config.json text (Hugging Face form) the GGUF metadata and tensor shapes describe.
std::string gguf_config_json(const GgufFile& g);

}  // namespace moe
