// Tokenized training data: versioned binary shards with a train/validation split, and
// deterministic batch sampling (a batch depends only on the seed and the step, so a resumed run
// reads exactly the batches an uninterrupted one would).
//
// A prepared data folder holds:
//   tokenizer.json   the byte-level BPE tokenizer trained on the corpus
//   meta.json        format name and version, vocab size, eos id, token counts, label names
//   train.bin        shard: header, tokens, then (if labeled) genre and POS label per token
//   val.bin
// Shard header (little-endian, 32 bytes): "MOETOKS1", u32 version (1), u32 bytes per token (2 or
// 4), u64 token count, u32 labeled (0/1), u32 reserved. Documents are separated by the eos token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace moe {

struct PrepareParams {
  int vocab_size = 4096;
  double val_fraction = 0.05;  // of documents, taken evenly spaced
  // A tokenizer.json to use instead of training a BPE (e.g. the one of a checkpoint being
  // fine-tuned); its vocabulary size goes into meta.json, and documents end with eos_id (-1: the
  // tokenizer's "<|endoftext|>"). Part-of-speech labels are not kept (no byte offsets).
  std::string tokenizer;
  int32_t eos_id = -1;
};

// Loads a corpus (Brown or text), trains the tokenizer (or loads p.tokenizer), tokenizes and
// writes the data folder. Prints a one-line summary to stderr.
void dataset_prepare(const std::string& corpus_path, const std::string& out_dir,
                     const PrepareParams& p);

struct Shard {
  std::unique_ptr<MappedFile> file;
  int64_t n = 0;
  int token_bytes = 2;
  bool labeled = false;
  const uint8_t* tokens = nullptr;
  const uint8_t* genre = nullptr;  // (n) or null
  const uint8_t* pos = nullptr;    // (n) or null
  int32_t token(int64_t i) const;
};

struct Dataset {
  std::string dir;
  int vocab = 0;
  int32_t eos_id = -1;
  std::vector<std::string> genres, pos_tags;
  Shard train, val;
};

// Opens a prepared data folder; validates meta.json and both shard headers against file sizes.
void dataset_open(Dataset* d, const std::string& dir);
// True if dir holds a prepared dataset (meta.json).
bool dataset_is_prepared(const std::string& dir);

// Fills ids/targets (B, T) with B random windows of the train shard for (seed, step, micro).
void dataset_train_batch(const Dataset& d, uint64_t seed, int64_t step, int micro, int B, int T,
                         int32_t* ids, int32_t* targets);
// Validation window w of length T (evenly spaced over the val shard); returns false past the end.
bool dataset_val_window(const Dataset& d, int w, int n_windows, int T, int32_t* ids,
                        int32_t* targets);

}  // namespace moe
