// Subcommands of the `moe` CLI. Each registers its flags once (names, defaults, help) on a CLI11
// subcommand and returns the function that runs it.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe {

using CommandRun = std::function<int()>;

CommandRun cmd_logits_register(CLI::App* app);
CommandRun cmd_generate_register(CLI::App* app);
CommandRun cmd_inspect_register(CLI::App* app);
CommandRun cmd_quantize_register(CLI::App* app);
CommandRun cmd_init_register(CLI::App* app);
CommandRun cmd_train_register(CLI::App* app);
CommandRun cmd_tokenizer_train_register(CLI::App* app);
CommandRun cmd_upcycle_register(CLI::App* app);
CommandRun cmd_tokenize_register(CLI::App* app);
CommandRun cmd_detokenize_register(CLI::App* app);
CommandRun cmd_chat_register(CLI::App* app);
CommandRun cmd_bench_layer_register(CLI::App* app);
CommandRun cmd_bench_decode_register(CLI::App* app);
CommandRun cmd_bench_prefill_register(CLI::App* app);
CommandRun cmd_bench_ep_register(CLI::App* app);
CommandRun cmd_eval_register(CLI::App* app);
CommandRun cmd_export_register(CLI::App* app);
CommandRun cmd_serve_register(CLI::App* app);
CommandRun cmd_template_register(CLI::App* app);
CommandRun cmd_experiment_register(CLI::App* app);

// Parses "1,2,3" into ids; throws MoeError naming `flag` on anything else.
std::vector<int32_t> parse_id_list(const std::string& text, const char* flag);

// Applies --threads (0 = all cores) to OpenMP and BLAS.
void set_threads(int n);

// Writes s to stdout in one call; throws MoeError on a write error.
void write_stdout(const std::string& s);

// `moe generate --speculative`: the method ("" = plain decoding, "mtp" = drafts from the model's
// MTP modules, `draft` of them, 0 = all); with compare_plain the plain decode runs too, and the
// tokens/s of both, the speed-up and whether the outputs are identical go to stderr.
struct SpecOptions {
  std::string method;
  int draft = 0;
  bool compare_plain = false;
};
struct Model;
struct GenerateParams;
std::vector<int32_t> generate_cli(const Model& m, const std::vector<int32_t>& prompt,
                                  const GenerateParams& p, const SpecOptions& spec,
                                  const std::function<void(int32_t)>& on_token);

// --expert-cache GiB, --expert-cache-half-life, --no-expert-prefetch (cmd_expert_cache.cpp), and
// the cache's counters as JSON (for --stats).
struct ExpertCacheOptions;
struct ExpertCache;
void add_expert_cache_options(CLI::App* app, ExpertCacheOptions* o);
nlohmann::ordered_json expert_cache_json(const ExpertCache& c);

}  // namespace moe
