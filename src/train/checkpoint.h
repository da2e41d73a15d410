// Training checkpoints and exported models.
//
// A checkpoint folder holds the parameter arena under Hugging Face names, config.json,
// generation_config.json, tokenizer.json (when known), the AdamW moments (exp_avg.<name> /
// exp_avg_sq.<name>) and trainer_state.json (step, seed, AdamW's step and each routed expert's, REINFORCE routing's
// reward baseline, the optimizer files).
//
// One process writes model.safetensors and optimizer.safetensors. Under expert parallelism the
// checkpoint is one Hugging Face sharded checkpoint: the ranks of an expert-parallel group of K
// each write their own routed experts as model-0000<r+1>-of-0000<K>.safetensors (rank 0 adds the
// tensors of no expert), rank 0 writes model.safetensors.index.json, and the moments go into
// optimizer-0000<r+1>-of-0000<K>.safetensors the same way. The moments are stored per tensor,
// hence per expert, so a run on any number of ranks reads the ones of the experts it holds.
//
// Checkpoint folders are written under a temporary name and renamed into place once every rank
// has written its files (after a barrier), so a crash never leaves a half-written checkpoint
// where a good one was.
#pragma once

#include <cstdint>
#include <string>

#include "dist/comm.h"
#include "train/optim.h"
#include "train/train_model.h"

namespace moe {

// This process's part in writing a model: its shard of n_shards. The ranks of the first
// data-parallel group write one shard each (shard 0 also holds the tensors of no expert); the
// ranks of the other groups hold copies and write nothing. world: every process (barriers), null
// in one process.
struct ShardRole {
  Comm* world = nullptr;
  int shard = 0, n_shards = 1;
  bool writes = true;
};

// The role of this process under comm_world(), comm_ep() and comm_dp() (one shard without MPI).
ShardRole shard_role();

// Writes the model (weights, config.json, generation_config.json, tokenizer.json copied from
// tokenizer_path if non-empty) into dir's files, each atomically, removing weight files of an
// earlier export with another shard count. Every rank of role.world calls it.
void export_model(const TrainModel& tm, const std::string& dir, const std::string& tokenizer_path,
                  const ShardRole& role = ShardRole());

// Writes a full checkpoint folder atomically (dir is replaced as a whole). Every rank of
// role.world calls it.
void checkpoint_save(const TrainModel& tm, const AdamW& opt, int64_t step, uint64_t seed,
                     const std::string& dir, const std::string& tokenizer_path,
                     const ShardRole& role = ShardRole());

// Loads the held weights and optimizer state of a checkpoint written by checkpoint_save (by any
// number of ranks) into an allocated model of the same configuration; returns the step. Throws
// MoeError naming the file on any mismatch.
int64_t checkpoint_load(TrainModel* tm, AdamW* opt, const std::string& dir, uint64_t* seed);

}  // namespace moe
