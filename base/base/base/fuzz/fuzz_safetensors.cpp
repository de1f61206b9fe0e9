// Fuzz target: arbitrary bytes as a safetensors file. Any input must either
// parse or throw longkv::Error; crashes, hangs and sanitizer reports are bugs.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto st = longkv::SafetensorsFile::parse(std::span<const uint8_t>(data, size), "fuzz");
    // Touch every view so out-of-range pointers show under ASan.
    uint64_t sum = 0;
    for (const auto& t : st->tensors()) {
      if (t.nbytes() > 0) sum += t.data[0] + t.data[t.nbytes() - 1];
      sum += t.numel();
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const longkv::Error&) {
  }
  return 0;
}
