// Training checkpoints and exported models.
//
// A checkpoint folder holds model.safetensors (the parameter arena under Hugging Face names),
// config.json, generation_config.json, tokenizer.json (when known), optimizer.safetensors
// (AdamW moments as exp_avg.<name> / exp_avg_sq.<name>) and trainer_state.json (step, seed,
// AdamW's step and each routed expert's, and REINFORCE routing's reward baseline).
// Folders are written under a temporary name and renamed into place, so a crash never leaves a
// half-written checkpoint where a good one was.
#pragma once

#include <cstdint>
#include <string>

#include "train/optim.h"
#include "train/train_model.h"

namespace moe {

// Writes the model (weights, config.json, generation_config.json, tokenizer.json copied from
// tokenizer_path if non-empty) into dir's files, each atomically.
void export_model(const TrainModel& tm, const std::string& dir, const std::string& tokenizer_path);

// Writes a full checkpoint folder atomically (dir is replaced as a whole).
void checkpoint_save(const TrainModel& tm, const AdamW& opt, int64_t step, uint64_t seed,
                     const std::string& dir, const std::string& tokenizer_path);

// Loads weights and optimizer state saved by checkpoint_save into an allocated model of the same
// configuration; returns the step. Throws MoeError naming the file on any mismatch.
int64_t checkpoint_load(TrainModel* tm, AdamW* opt, const std::string& dir, uint64_t* seed);

}  // namespace moe
