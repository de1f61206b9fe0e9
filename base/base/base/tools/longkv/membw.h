// Measured memory read bandwidth of this machine (the roofline that decode
// speed is compared against).
#pragma once

#include "core/thread_pool.h"

namespace longkv::cli {

// Reads a buffer of `bytes` several times with all pool threads (SIMD sums)
// and returns the best GB/s (1e9 bytes/s).
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30);

}  // namespace longkv::cli
