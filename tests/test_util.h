// Shared helpers for tests: fixture discovery, temp dirs, running the CLI.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace moe_test {

// Names of fixture folders under MOE_FIXTURE_DIR that hold a golden.safetensors, sorted.
std::vector<std::string> fixture_names();
std::string fixture_path(const std::string& name);

// A fresh empty directory under the test temp dir.
std::string make_temp_dir(const std::string& tag);
void copy_dir(const std::string& from, const std::string& to);

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// n normal samples N(0, scale^2), deterministic in seed.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// The whole file, or "" if it cannot be read.
std::string slurp(const std::string& path);

// Runs the moe CLI with the given argument string (shell-quoted by the caller).
RunResult run_moe(const std::string& args);

}  // namespace moe_test
