// Helpers the training tests share: a small word corpus and its tokenizer, a fixture copy with a
// grown vocabulary that `moe train --init` accepts, metrics.jsonl and safetensors readers, and a
// fixture loaded into the trainer.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "train/train_model.h"

namespace moe_test {

// A folder of six text documents of 16 words in a fixed pseudo-random order (made once).
std::string word_corpus();
// A byte-level BPE of 300 tokens trained on word_corpus() by `moe tokenizer train` (made once).
std::string corpus_tokenizer();

// A copy of tests/fixtures/<fixture> that --init accepts with corpus_tokenizer(): the vocabulary
// grown to `vocab` rows (new embedding and head rows copied from the first ones, scaled by 0.5),
// eos / bos / pad set to the tokenizer's end-of-text token, and the tokenizer beside it if
// with_tokenizer. Every other tensor, dtype and config field is the fixture's.
std::string grown_vocab_copy(const std::string& fixture, int vocab, bool with_tokenizer);

nlohmann::json read_json(const std::string& path);
// The {"final": true, ...} line of DIR/metrics.jsonl (null if none).
nlohmann::json final_metrics(const std::string& dir);
// Each tensor's bytes in a safetensors file, by name.
std::map<std::string, std::string> tensor_bytes(const std::string& path);
// Routed-expert and router tensors, by their Hugging Face names.
bool is_expert_or_router(const std::string& name);

// The checkpoint DIR in a training arena (config, allocation, weights).
void load_trainer(moe::TrainModel* tm, const std::string& dir);

}  // namespace moe_test
