// Fuzz target for the GGUF reader: any input must either parse or throw
// longkv::Error; everything a parse returns must be safe to read, so the
// target touches every value and the first and last byte of every tensor
// (the sanitizers catch an out-of-bounds pointer).
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/gguf.h"

namespace {

uint64_t touch(const longkv::GgufValue& v) {
  uint64_t h = static_cast<uint64_t>(v.type) + v.u + static_cast<uint64_t>(v.i);
  if (v.is_float()) h += static_cast<uint64_t>(v.f != 0);
  for (char c : v.s) h = h * 31 + static_cast<unsigned char>(c);
  for (const auto& e : v.arr) {
    if (e.type != v.elem_type) __builtin_trap();  // the reader promises homogeneous arrays
    h += touch(e);
  }
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto g = longkv::GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
    volatile uint64_t sink = g->alignment();
    for (const auto& [key, v] : g->metadata()) {
      sink = sink + key.size() + touch(v);
      if (g->find(key) != &v) __builtin_trap();
    }
    // Accessors must throw, never crash, on whatever types the file holds.
    for (const char* key : {"general.architecture", "general.alignment", "llama.block_count"}) {
      try {
        sink = sink + static_cast<uint64_t>(g->get_int(key, 0));
      } catch (const longkv::Error&) {
      }
      try {
        sink = sink + g->get_string(key).size();
      } catch (const longkv::Error&) {
      }
    }
    for (const auto& t : g->tensors()) {
      sink = sink + t.n_elements() + t.ne.size() + t.type;
      if (g->find_tensor(t.name) != &t) __builtin_trap();
      if (t.nbytes > 0) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    }
  } catch (const longkv::Error&) {
  }
  return 0;
}
