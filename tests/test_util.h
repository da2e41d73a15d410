// Shared helpers for tests: fixture discovery, temp dirs, running the CLI.
#pragma once

#include <cstdint>
#include <random>
#include <functional>
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

// CPU seconds the calling thread spends in f(): a time bound checked this way does not fail
// because other work loads the machine.
double thread_cpu_seconds(const std::function<void()>& f);
// "Within a second" in a release build; sanitizer builds run about three times slower. g++ defines
// __SANITIZE_ADDRESS__ under -fsanitize=address; clang++ reports it through __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define MOE_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_TEST_ASAN 1
#endif
#endif
#if defined(MOE_TEST_ASAN)
inline constexpr double kOneSecondBound = 3.0;
#else
inline constexpr double kOneSecondBound = 1.0;
#endif

}  // namespace moe_test
