// Errors: every failure the user can cause (bad file, bad flag, bad JSON) is a MoeError whose
// message is one line naming the file and the field. The CLI prints it and exits non-zero.
// MOE_CHECK guards internal invariants: always on, also in release builds.
#pragma once

#include <stdexcept>
#include <string>

namespace moe {

struct MoeError : std::runtime_error {
  explicit MoeError(const std::string& msg) : std::runtime_error(msg) {}
};

// printf-style formatting into a std::string.
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Throws MoeError with a printf-formatted one-line message.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void check_failed(const char* expr, const char* file, int line);

}  // namespace moe

#define MOE_CHECK(cond) \
  do { \
    if (!(cond)) ::moe::check_failed(#cond, __FILE__, __LINE__); \
  } while (0)
