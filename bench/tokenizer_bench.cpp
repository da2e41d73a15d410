// Tokenizer throughput: encode (warm and cold BPE cache, 1 and 2 threads) and decode, in MB/s
// (10^6 bytes of text per second), for each tokenizer.json found.
//
//   tokenizer_bench [--text=FILE] [--tokenizers=A.json,B.json] [benchmark flags]
//   (or MOE_BENCH_TEXT / MOE_BENCH_TOKENIZERS in the environment)
//
// Without a text file the input is the golden texts of tests/fixtures/tokenizers/goldens.json
// joined by "\n" and repeated to at least 4 MB (scripts/fixtures/tokenizers/bench_js.mjs builds the
// same text for the JavaScript reference); without that file, a built-in paragraph.
// Default tokenizers: the committed families plus any installed under
// scripts/fixtures/tokenizers/node_modules.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "text/tokenizer.h"

namespace {

namespace fs = std::filesystem;

constexpr size_t kMinBytes = 4'000'000;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string default_text() {
  std::string unit;
  std::string goldens = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/tokenizers/goldens.json";
  if (fs::exists(goldens)) {
    auto j = nlohmann::json::parse(slurp(goldens));
    for (size_t i = 0; i < j["texts"].size(); ++i) {
      if (i) unit += "\n";
      unit += j["texts"][i].get<std::string>();
    }
    unit += "\n";
  } else {
    unit =
        "The quick brown fox jumps over the lazy dog. It's 2024, and we'll tokenize "
        "everything: code (x += 42;), numbers 3.14159, and 你好，世界! Привет, мир.\n";
  }
  std::string text;
  while (text.size() < kMinBytes) text += unit;
  return text;
}

struct Family {
  std::string name;
  std::shared_ptr<moe::Tokenizer> tok;
};

std::vector<std::string> default_tokenizers() {
  std::vector<std::string> out;
  std::string root = MOE_SOURCE_DIR;
  for (const char* f : {"llama2", "qwen3", "deepseek_v3"})
    out.push_back(root + "/tests/fixtures/tokenizers/" + f + "/tokenizer.json");
  for (const char* f : {"llama3", "gptoss", "gemma3", "gpt4o"}) {
    std::string p = root + "/scripts/fixtures/tokenizers/node_modules/@lenml/tokenizer-" +
                    std::string(f) + "/models/tokenizer.json";
    if (fs::exists(p)) out.push_back(p);
  }
  return out;
}

std::string family_name(const std::string& path) {
  fs::path p(path);
  std::string dir = p.parent_path().filename().string();
  if (dir == "models") dir = p.parent_path().parent_path().filename().string();
  if (dir.rfind("tokenizer-", 0) == 0) dir = dir.substr(10);
  return dir;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string text_path, tok_list;
  if (const char* e = std::getenv("MOE_BENCH_TEXT")) text_path = e;
  if (const char* e = std::getenv("MOE_BENCH_TOKENIZERS")) tok_list = e;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--text=", 7) == 0)
      text_path = argv[i] + 7;
    else if (std::strncmp(argv[i], "--tokenizers=", 13) == 0)
      tok_list = argv[i] + 13;
    else
      rest.push_back(argv[i]);
  }
  int rest_argc = static_cast<int>(rest.size());

  static std::string text;
  text = text_path.empty() ? default_text() : slurp(text_path);
  std::vector<std::string> paths = tok_list.empty() ? default_tokenizers() : split_commas(tok_list);

  static std::vector<Family> families;
  for (const std::string& p : paths) {
    auto t = std::make_shared<moe::Tokenizer>();
    moe::tokenizer_load(t.get(), p);
    families.push_back({family_name(p), t});
  }
  benchmark::AddCustomContext("text_bytes", std::to_string(text.size()));

  // "MB/s" is decimal megabytes of text per second (CPU time, or wall time for the threaded run).
  auto mb_per_s = [](size_t bytes) {
    return benchmark::Counter(static_cast<double>(bytes) / 1e6,
                              benchmark::Counter::kIsIterationInvariantRate);
  };
  for (const Family& f : families) {
    moe::Tokenizer* t = f.tok.get();
    auto encode = [t, mb_per_s](benchmark::State& st) {
      size_t n = 0;
      for (auto _ : st) {
        auto ids = moe::tokenizer_encode(*t, text, false);
        n = ids.size();
        benchmark::DoNotOptimize(ids.data());
      }
      st.counters["MB/s"] = mb_per_s(text.size());
      st.counters["tokens"] = static_cast<double>(n);
    };
    benchmark::RegisterBenchmark(("encode/" + f.name).c_str(), encode)
        ->Unit(benchmark::kMillisecond);
    // Two threads share the tokenizer and its BPE cache; MB/s is the total over both threads.
    benchmark::RegisterBenchmark(("encode_2threads/" + f.name).c_str(), encode)
        ->Unit(benchmark::kMillisecond)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("encode_cold_cache/" + f.name).c_str(),
                                 [t, mb_per_s](benchmark::State& st) {
                                   for (auto _ : st) {
                                     st.PauseTiming();
                                     t->cache = moe::tok::bpe_cache_new();
                                     st.ResumeTiming();
                                     auto ids = moe::tokenizer_encode(*t, text, false);
                                     benchmark::DoNotOptimize(ids.data());
                                   }
                                   st.counters["MB/s"] = mb_per_s(text.size());
                                 })
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("decode/" + f.name).c_str(), [t, mb_per_s](benchmark::State& st) {
      auto ids = moe::tokenizer_encode(*t, text, false);
      size_t bytes = 0;
      for (auto _ : st) {
        std::string s = moe::tokenizer_decode(*t, ids, false);
        bytes = s.size();
        benchmark::DoNotOptimize(s.data());
      }
      st.counters["MB/s"] = mb_per_s(bytes);
    })->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
