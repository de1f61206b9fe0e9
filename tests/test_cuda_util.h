// Shared by the CUDA test files: skip (with the reason the backend gives)
// when no usable GPU is present, so ctest reports the test as skipped.
#pragma once

#include <string>

#include "backend/cuda/cuda_backend.h"

#define LONGKV_REQUIRE_CUDA()                                   \
  do {                                                          \
    std::string why_;                                           \
    if (!::longkv::cuda_available(&why_)) GTEST_SKIP() << why_; \
  } while (0)
