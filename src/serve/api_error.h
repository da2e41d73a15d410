// OpenAI-style API errors: {"error": {"message", "type", "code"}} with an HTTP status.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace moe {

struct ApiError : std::runtime_error {
  int status;        // HTTP status
  std::string type;  // invalid_request_error, authentication_error, not_found_error, ...
  std::string code;  // machine-readable, e.g. "context_length_exceeded"
  ApiError(int status_, std::string type_, std::string code_, const std::string& message)
      : std::runtime_error(message), status(status_), type(std::move(type_)), code(std::move(code_)) {}
};

// A 400 invalid_request_error.
[[noreturn]] void api_bad_request(const std::string& message, const std::string& code = "invalid_value");

nlohmann::json api_error_json(int status, const std::string& type, const std::string& code,
                              const std::string& message);
inline nlohmann::json api_error_json(const ApiError& e) {
  return api_error_json(e.status, e.type, e.code, e.what());
}

}  // namespace moe
