// Routing of a checkpoint on data, for `moe inspect --data`: runs the model over windows of token
// ids, collects every MoE layer's top-k choices, and turns them into the statistics of
// routing_stats.h, a JSON document, a plain-text summary and the HTML report.
//
// Windows: the tokens are cut into windows of `window` tokens, each run from an empty KV cache,
// so every token sees at most window - 1 tokens of context.
// Perturbation: the same windows again with the input embeddings perturbed by
// noise * rms(row) * N(0, 1) (InferState::embed_noise); the overlap of the two routings is the
// "perturbed" consistency.
// Second checkpoint: the same windows through another checkpoint of the same architecture (e.g. an
// earlier snapshot of the run); the overlap is the "checkpoint" consistency.
//
// Legend: N tokens, K experts per token, E experts, L labels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/report_html.h"
#include "analysis/routing_stats.h"
#include "model/weights.h"
#include "text/tokenizer.h"

namespace moe {

// Tokens to inspect, with optional Brown Corpus labels aligned to them.
struct InspectData {
  std::string source;                            // what the tokens came from
  std::vector<int32_t> ids;                      // (N)
  std::vector<int32_t> genre, pos;               // (N) label index, -1 = none; or empty
  std::vector<std::string> genre_names, pos_names;
};

// Reads up to max_tokens tokens: from a prepared data folder (meta.json; its validation shard,
// with genre and POS labels when it has them), or from a text file encoded with tok (no labels).
// window > 0 and a shard longer than max_tokens: max_tokens tokens in windows of window tokens
// (the last one cut short) spread over the whole shard, stratified by genre (equal shares of
// windows per genre, evenly spaced within each), in shard order; else the first max_tokens
// tokens. Errors name the path.
void inspect_data_load(InspectData* d, const std::string& path, const Tokenizer& tok,
                       int64_t max_tokens, int window = 0);

// One MoE layer's routing of all N tokens, or of the n tokens `at` lists.
struct LayerRoute {
  int layer = 0;
  int mtp = 0;                // k >= 1: the block of multi-token-prediction module k
  TopK topk;
  std::vector<int64_t> at;    // (n) the token index of each routed row; empty = all N, in order
};

// Runs ids through m in windows, returns the routing of every MoE layer (in layer order).
// An MTP module's MoE block (DeepSeek-V3 layout, layer L + k - 1 for module k) comes last: module
// k at token j reads the previous depth's hidden state there and token j + k, so it routes the
// tokens of a window that have k tokens after them in the window (`at`).
// noise > 0 perturbs the input embeddings (see above) with draws keyed on seed.
std::vector<LayerRoute> collect_routing(const Model& m, const std::vector<int32_t>& ids,
                                        int window, float noise = 0.0f, uint64_t seed = 0);

struct InspectOptions {
  int window = 256;
  double capacity_factor = 1.25;  // for the dropped-token rates (0 = dropless)
  double threshold = 3.0;         // hot-expert alert: load > threshold * mean
  float perturb = 0.01f;          // relative embedding noise for consistency (0 = skip)
  uint64_t seed = 1;
  int token_labels = 40;          // most frequent tokens kept for token specialisation
  double min_count = 20.0;        // labels with fewer tokens are left out of the lift tables
  int sample_tokens = 48;         // tokens of the sample text routed in the report
};

struct InspectResult {
  nlohmann::ordered_json json;  // full numbers
  std::string text;             // terminal summary
  ReportData report;            // everything but the training telemetry
};

// Analyses routing of m on d. other (may be null): a second checkpoint of the same architecture
// for the consistency between checkpoints (MoeError if its layers or experts differ).
InspectResult inspect_routing(const Model& m, const Tokenizer& tok, const InspectData& d,
                              const Model* other, const InspectOptions& o);

}  // namespace moe
