// Shared helpers for tests: fixture discovery, temp dirs, running the CLI.
#pragma once

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
// Runs the moe CLI with the given argument string (shell-quoted by the caller).
RunResult run_moe(const std::string& args);

}  // namespace moe_test
