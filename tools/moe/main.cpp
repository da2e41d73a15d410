// moe: the command-line front end of moe.cpp.
#include <cblas.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <map>

#include "commands.h"
#include "ops/blas_env.h"
#include "ops/ops.h"
#include "core/error.h"
#include "dist/comm.h"

namespace moe {

std::vector<int32_t> parse_id_list(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  size_t i = 0;
  if (text.empty()) fail("%s: the list is empty", flag);
  while (i <= text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    std::string tok = text.substr(i, j - i);
    while (!tok.empty() && tok.front() == ' ') tok.erase(tok.begin());
    while (!tok.empty() && tok.back() == ' ') tok.pop_back();
    if (tok.empty() || tok.size() > 10 || tok.find_first_not_of("0123456789") != std::string::npos)
      fail("%s: '%s' is not a non-negative integer token id", flag, tok.c_str());
    long long v = std::stoll(tok);
    if (v > 2147483647LL) fail("%s: '%s' is out of range", flag, tok.c_str());
    ids.push_back(static_cast<int32_t>(v));
    i = j + 1;
  }
  return ids;
}

void set_threads(int n) {
  if (n < 0) fail("--threads must be >= 0");
  if (n == 0) n = omp_get_num_procs();
  ops_set_threads(n);
}

void write_stdout(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size() || std::fflush(stdout) != 0)
    fail("failed to write to standard output");
}

}  // namespace moe

namespace {

// "rank r: " in a multi-process run, so that an error names the rank it happened on.
std::string rank_prefix() {
  moe::Comm& w = moe::comm_world();
  return w.size() > 1 ? "rank " + std::to_string(w.rank()) + ": " : "";
}

int moe_main(int argc, char** argv) {
  // libgomp reads OMP_WAIT_POLICY once, when it loads. Its default (spinning) makes idle OpenMP
  // threads compete with OpenBLAS's own threads for the cores; unless the user chose a policy,
  // run again with a passive one. execv returns only on failure, and then we carry on as we are.
  // Likewise OpenBLAS reads OPENBLAS_CORETYPE once: on a CPU it does not recognise, ask for the
  // kernels the CPU can run (ops/blas_env.h) instead of its SSE3 fallback.
  bool again = false;
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    again = true;
  }
  if (!std::getenv("OPENBLAS_CORETYPE")) {
    if (const char* core = moe::blas_coretype_override()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      again = true;
    }
  }
  if (again) execv("/proc/self/exe", argv);
  // Under an MPI launcher, every command runs expert-parallel (dist/comm.h).
  moe::comm_init(&argc, &argv);
  if (moe::comm_world().size() > 1) {  // every rank must run the same command
    std::string line;
    for (int i = 1; i < argc; ++i) line += std::string(argv[i]) + '\0';
    try {
      moe::comm_check_same(moe::comm_world(), line, "command line");
    } catch (const moe::MoeError& e) {
      std::fprintf(stderr, "moe: error: %s%s\n", rank_prefix().c_str(), e.what());
      return 2;
    }
  }
  moe::ops_set_threads(0);  // OpenBLAS single-threaded; GEMMs split over OpenMP (ops/ops.h)
  CLI::App app{"moe.cpp: run, train and inspect Mixture-of-Experts transformers", "moe"};
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // last flag wins
  app.set_version_flag("--version", "moe 0.1.0");
  std::map<CLI::App*, moe::CommandRun> runs;
  auto add = [&](const char* name, const char* help, moe::CommandRun (*reg)(CLI::App*)) {
    CLI::App* sub = app.add_subcommand(name, help);
    runs[sub] = reg(sub);
  };
  add("logits", "print the logits of every input position as JSON", moe::cmd_logits_register);
  add("generate", "generate a continuation of a prompt", moe::cmd_generate_register);
  add("eval", "perplexity on held-out tokens; with --ref, the change from a reference model",
      moe::cmd_eval_register);
  add("inspect", "summarise a checkpoint's architecture, parameters and memory",
      moe::cmd_inspect_register);
  add("quantize", "write a bf16 / q8_0 / q4_0 copy of a checkpoint", moe::cmd_quantize_register);
  add("init", "write a random-weight checkpoint of a config.json", moe::cmd_init_register);
  add("export", "write a checkpoint as a GGUF file for llama.cpp", moe::cmd_export_register);
  add("train", "train an MoE (or dense) language model", moe::cmd_train_register);
  add("upcycle", "turn a dense checkpoint into an MoE (sparse upcycling)", moe::cmd_upcycle_register);
  add("tokenize", "encode text with a tokenizer.json", moe::cmd_tokenize_register);
  add("detokenize", "decode token ids with a tokenizer.json", moe::cmd_detokenize_register);
  add("chat", "interactive chat through the model's chat template", moe::cmd_chat_register);
  add("serve", "OpenAI-compatible HTTP server with continuous batching", moe::cmd_serve_register);
  add("template", "render messages with a chat template, as /apply-template", moe::cmd_template_register);
  add("experiment", "train the configurations of an experiment with several seeds, write "
      "docs/experiments.md", moe::cmd_experiment_register);
  {
    CLI::App* bench = app.add_subcommand("bench", "benchmarks: an MoE layer, decode, prefill");
    bench->require_subcommand(1);
    CLI::App* sub = bench->add_subcommand("layer", "one MoE layer at a model's real shapes");
    runs[sub] = moe::cmd_bench_layer_register(sub);
    sub = bench->add_subcommand("decode", "end-to-end decode tokens/s of a checkpoint");
    runs[sub] = moe::cmd_bench_decode_register(sub);
    sub = bench->add_subcommand("prefill", "tokens/s of one long forward of a checkpoint");
    runs[sub] = moe::cmd_bench_prefill_register(sub);
    sub = bench->add_subcommand("ep", "an expert-parallel MoE layer under mpirun: all-to-all "
                                      "against plain MPI_Alltoallv");
    runs[sub] = moe::cmd_bench_ep_register(sub);
  }
  {
    CLI::App* tok = app.add_subcommand("tokenizer", "tokenizer tools");
    tok->require_subcommand(1);
    CLI::App* sub = tok->add_subcommand("train", "train a byte-level BPE tokenizer.json");
    runs[sub] = moe::cmd_tokenizer_train_register(sub);
  }
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known |= sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "moe: error: unknown command '%s' (commands: %s)\n", argv[1], names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "moe: error: %s (see moe --help)\n", e.what());
    return 2;
  }
  try {
    for (auto& kv : runs)
      if (kv.first->parsed()) return kv.second();
  } catch (const moe::MoeError& e) {
    std::fprintf(stderr, "moe: error: %s%s\n", rank_prefix().c_str(), e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "moe: error: %sout of memory\n", rank_prefix().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int rc = moe_main(argc, argv);
  if (moe::comm_is_mpi()) {
    // A rank that fails ends the whole job: the others may be waiting for it in a collective.
    if (rc != 0) moe::comm_abort(rc);
    moe::comm_finalize();
  }
  return rc;
}
