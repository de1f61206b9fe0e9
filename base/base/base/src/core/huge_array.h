// Large uninitialized arrays backed by transparent huge pages where the
// kernel offers them (Linux, THP in "madvise" or "always" mode).
//
// Why: KV caches are hundreds of MiB to GiB, read front to back by every
// decode step. With 4 KiB pages a 1.5 KiB quantized group record crosses a
// page every few groups, and the page walks stall the attention loop's
// loads and software prefetches (perf showed them as stalls on
// `prefetcht1`); 2 MiB pages remove those walks. Memory is reserved, not
// committed: pages are touched as tokens arrive, as with `new T[n]`.
// Without THP (or off Linux) this is a plain anonymous mapping.
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>

namespace longkv {

// Uninitialized memory of `bytes` bytes (nullptr for 0); on Linux an
// anonymous mapping (zero pages), 2 MiB-aligned and huge-page-advised when
// bytes >= 2 MiB. Throws Error when the mapping fails. Free with
// huge_free(p, bytes).
void* huge_alloc(size_t bytes);
void huge_free(void* p, size_t bytes) noexcept;

struct HugeFree {
  size_t bytes = 0;
  void operator()(void* p) const noexcept { huge_free(p, bytes); }
};
template <typename T>
using HugeArray = std::unique_ptr<T[], HugeFree>;

template <typename T>
HugeArray<T> make_huge_array(size_t n) {
  static_assert(std::is_trivially_default_constructible_v<T> && std::is_trivially_destructible_v<T>);
  const size_t bytes = n * sizeof(T);
  return HugeArray<T>(static_cast<T*>(huge_alloc(bytes)), HugeFree{bytes});
}

}  // namespace longkv
