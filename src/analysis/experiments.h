// The experiments of `moe experiment`: a registry of named comparisons, each a list of training
// configurations given as `moe train` flags, and the plain data their runs produce.
//
// Adding a configuration to an experiment is one line of the registry (experiments.cpp): a name
// and the `moe train` flags that differ from the experiment's common ones, e.g.
//   {"BASE", "--experts 8 --top-k 1 --expert-ffn 512 --router base"},
// A configuration may start from a base run of the same experiment (--init), optionally upcycled
// first (`moe upcycle` flags), and may train on the fine-tuning genre instead of the whole corpus.
//
// Notation: S seeds, R configurations, V validation points of a run.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moe {

struct ModelConfig;

// Metrics an experiment reports beyond the validation loss (bit flags).
enum ExpMetric : unsigned {
  EXP_METRIC_LOAD = 1u << 0,     // max/mean expert load (worst layer), mean over the last steps
  EXP_METRIC_DROPPED = 1u << 1,  // dropped fraction of assignments, and the loss with drops
  EXP_METRIC_LOGIT = 1u << 2,    // largest router logit over training, and loss spikes
  EXP_METRIC_GAP = 1u << 3,      // validation minus training loss (generalisation gap)
  EXP_METRIC_HORIZON = 1u << 4,  // first validation step where a configuration beats the reference
  EXP_METRIC_ACCEPT = 1u << 5,   // MTP self-speculative acceptance on held-out text (moe eval)
};

struct ExpRun {
  ExpRun(std::string name_, std::string flags_, std::string base_ = "", std::string upcycle_ = "",
         bool genre_ = false)
      : name(std::move(name_)), flags(std::move(flags_)), base(std::move(base_)),
        upcycle(std::move(upcycle_)), genre(genre_) {}
  std::string name;     // label in tables and plots
  std::string flags;    // `moe train` flags of this configuration, added to the common ones
  std::string base;     // "" or the name of a base run to start from (--init)
  std::string upcycle;  // with base: `moe upcycle` flags applied to the base first
  bool genre = false;   // train on the fine-tuning genre's documents instead of the whole corpus
};

struct Experiment {
  std::string name;    // command-line name
  std::string title;   // section heading
  std::string claim;   // the claim tested, with its source
  std::string common;  // `moe train` flags every run of this experiment adds
  int steps = 200;            // full mode: steps of each configuration
  int base_steps = 0;         // full mode: steps of each base run
  int quick_steps = 40;       // --quick
  int quick_base_steps = 0;   // --quick
  unsigned metrics = 0;       // ExpMetric flags
  std::string reference;      // with EXP_METRIC_HORIZON: the configuration the others are set against
  std::vector<ExpRun> bases;  // trained first, not reported
  std::vector<ExpRun> runs;   // the configurations
};

// Every experiment, in the order `all` runs them.
const std::vector<Experiment>& experiment_registry();
// The experiment of that name, or null.
const Experiment* experiment_find(const std::string& name);
// "a, b, c": the registered names, for error messages and help.
std::string experiment_names();

// The settings that apply to every experiment of a mode, as `moe train` flags.
struct ExpMode {
  bool quick = false;
  std::string flags;  // model size, batch, schedule, evaluation
  int vocab = 4096;   // BPE vocabulary of the prepared data
  int seq = 128;      // tokens per training sequence (as in flags)
  std::string describe;  // one sentence for the docs: model size, batch, tokens per step
};
ExpMode experiment_mode(bool quick);

// ---- Results -----------------------------------------------------------------------------------

// One finished training run, read from its metrics.jsonl.
struct ExpRunResult {
  int seed = 0;
  bool diverged = false;          // stopped on a non-finite loss
  std::vector<double> val_step;   // (V)
  std::vector<double> val_loss;   // (V) dropless validation loss
  double final_val = 0.0;         // the final line's validation loss (NaN when diverged)
  double final_val_capacity = 0.0;  // with the training capacity factor, NaN when dropless
  double train_tail = 0.0;        // mean training cross-entropy over the last steps
  double max_mean = 0.0;          // worst layer's max/mean load, mean over the last steps
  double dropped = 0.0;           // dropped assignment fraction, mean over layers and the last steps
  double max_logit = 0.0;         // largest router logit of any step (NaN without logits)
  int spikes = 0;                 // steps whose training loss exceeds the previous step's by > 5%
  int steps = 0;                  // steps trained
  double mtp_accept = NAN;        // MTP drafts the main model accepts (moe eval), NaN = no MTP
  double mtp_draft_acc = NAN;     // MTP drafts equal to the held-out text's token
};

// The size of a configuration's model, from its config.json.
struct ExpSize {
  int64_t params = 0;         // total parameters
  int64_t active = 0;         // parameters a token uses (routed experts it skips excluded)
  double flops = 0.0;         // forward FLOPs per token (matmuls and attention, no embedding lookup)
  std::string shape;          // e.g. "4 layers, d 128, 8 x 512 experts top-2"
};

// Parameters and forward FLOPs per token of a model: FLOPs = 2 x the matrix parameters a token
// uses (its routed experts, not the others; the embedding lookup excluded, a tied output head
// counted) + the attention scores and values, 2 x layers x heads x head dim x (seq + 1) at a
// mean context of (seq + 1) / 2.
ExpSize experiment_size(const ModelConfig& c, int seq);

struct ExpConfigResult {
  std::string name;
  std::string flags;  // as run (common flags excluded)
  ExpSize size;
  std::vector<ExpRunResult> seeds;  // (S)
};

struct ExpResult {
  std::string name, title, claim;
  bool quick = false;
  int steps = 0, base_steps = 0;
  std::string mode_flags, mode_describe, common;
  unsigned metrics = 0;
  std::string reference;
  std::vector<ExpConfigResult> configs;  // (R)
};

// Reads mtp_accept and mtp_draft_acc from the JSON that `moe eval --json` printed (text: the
// whole output; the JSON object is its last part); NaN where the model has no MTP modules.
// Throws MoeError naming `what` when no JSON object can be read.
void experiment_read_eval(const std::string& text, const std::string& what, ExpRunResult* r);

// Parses DIR/metrics.jsonl of a finished run; throws MoeError naming the file and line.
ExpRunResult experiment_read_metrics(const std::string& path, int seed, int tail_steps);

// Mean and sample standard deviation over the seeds that did not diverge (NaN when none).
struct MeanSd {
  double mean = 0.0, sd = 0.0;
  int n = 0;
};
MeanSd mean_sd(const std::vector<double>& v);

// The mean validation curve over seeds (steps every seed reached); x and y of equal length.
void experiment_mean_curve(const ExpConfigResult& c, std::vector<double>* x, std::vector<double>* y);
// The first validation step where the mean curve of c is below ref's, or -1 if never.
double experiment_overtake_step(const ExpConfigResult& c, const ExpConfigResult& ref);

// The raw numbers as JSON text, and back (throws MoeError naming `what` on a bad document).
std::string experiment_to_json(const ExpResult& r);
ExpResult experiment_from_json(const std::string& text, const std::string& what);

// The results table: a header row, then one row per configuration (cells as text).
std::vector<std::vector<std::string>> experiment_table(const ExpResult& r);
// One sentence ranking the configurations by mean final validation loss.
std::string experiment_ranking(const ExpResult& r);
// The markdown section of one experiment (between its markers), with a link to svg_rel (the plot,
// relative to the markdown file).
std::string experiment_markdown(const ExpResult& r, const std::string& svg_rel);
// Replaces the section of `name` in doc (between "<!-- experiment:NAME -->" and
// "<!-- /experiment:NAME -->") by section, or appends it; the rest of doc is kept.
std::string experiment_replace_section(const std::string& doc, const std::string& name,
                                       const std::string& section);

// The validation-loss plot (mean over seeds) as a standalone SVG file, in the report's style.
std::string experiment_svg(const ExpResult& r);
// The results of every registered experiment that dir holds as NAME.json, in registry order.
std::vector<ExpResult> experiments_load_dir(const std::string& dir);
// One self-contained HTML page drawing every experiment's table and plot in the report's style.
std::string experiments_html(const std::vector<ExpResult>& rs);

}  // namespace moe
