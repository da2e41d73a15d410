// Wall-clock seconds on a monotonic clock, for timers, throughput and timeouts.
#pragma once

#include <chrono>

namespace moe {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace moe
