#include "test_util.h"

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace moe_test {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(MOE_FIXTURE_DIR, ec))
    if (e.is_directory() && fs::exists(e.path() / "golden.safetensors"))
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string fixture_path(const std::string& name) { return std::string(MOE_FIXTURE_DIR) + "/" + name; }

std::string make_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  fs::path p = fs::temp_directory_path() /
               ("moe_test_" + std::to_string(getpid()) + "_" + tag + "_" + std::to_string(counter++));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void copy_dir(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from))
    fs::copy(e.path(), fs::path(to) / e.path().filename(), fs::copy_options::overwrite_existing);
}

RunResult run_moe(const std::string& args) {
  std::string dir = make_temp_dir("run");
  std::string out = dir + "/out", err = dir + "/err";
  // stdin is empty unless the arguments redirect it themselves
  std::string cmd = std::string(MOE_BIN) + " " + args + " >" + out + " 2>" + err +
                    (args.find('<') == std::string::npos ? " </dev/null" : "");
  int st = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = slurp(out);
  r.err = slurp(err);
  fs::remove_all(dir);
  return r;
}

double thread_cpu_seconds(const std::function<void()>& f) {
  timespec a{}, b{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
  f();
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
  return static_cast<double>(b.tv_sec - a.tv_sec) + 1e-9 * static_cast<double>(b.tv_nsec - a.tv_nsec);
}

}  // namespace moe_test
