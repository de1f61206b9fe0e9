// Wall-clock time for throughput figures.
#pragma once

#include <chrono>

namespace longkv {

inline double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

}  // namespace longkv
