// The channel between one request's HTTP handler and the scheduler thread.
//
// The scheduler appends a TokenOut per generated token (with the text it releases: stop strings
// hold text back until they are ruled out) and finally sets finished with a reason; the handler
// takes what is pending, under the mutex, and may set cancel at any time (client gone, timeout),
// which the scheduler honours at its next step.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace moe {

struct TokenOut {
  int32_t id = 0;
  std::string text;     // released text (may be empty, or hold text of earlier tokens)
  float logprob = 0.0f;                          // when logprobs were asked for
  std::vector<std::pair<int32_t, float>> top;    // (top_logprobs) alternatives, best first
};

enum FinishReason { FINISH_NONE, FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED, FINISH_TIMEOUT,
                    FINISH_SHUTDOWN, FINISH_ERROR };

inline const char* finish_reason_name(FinishReason f) {
  switch (f) {
    case FINISH_STOP: return "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_CANCELLED: return "cancelled";
    case FINISH_TIMEOUT: return "timeout";
    case FINISH_SHUTDOWN: return "shutdown";
    case FINISH_ERROR: return "error";
    default: return "none";
  }
}

struct SeqStream {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<TokenOut> pending;  // produced, not yet taken
  FinishReason finish = FINISH_NONE;
  std::string error;              // FINISH_ERROR's message
  std::string tail;               // text released at the finish (held back for stop strings)
  int prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  std::atomic<bool> cancel{false};
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

}  // namespace moe
