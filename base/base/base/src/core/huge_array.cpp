#include "core/huge_array.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>

#include "core/error.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace longkv {

constexpr size_t kHugePage = size_t(2) << 20;

void* huge_alloc(size_t bytes) {
  if (bytes == 0) return nullptr;
#if defined(__linux__)
  if (bytes < kHugePage) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    LONGKV_CHECK(p != MAP_FAILED, "cannot reserve %zu bytes of memory: %s", bytes, std::strerror(errno));
    return p;
  }
  // Over-reserve by one huge page and trim, so the array starts on a 2 MiB
  // boundary (a huge page can only back an aligned 2 MiB range).
  const size_t span = bytes + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  LONGKV_CHECK(raw != MAP_FAILED, "cannot reserve %zu bytes of memory: %s", bytes, std::strerror(errno));
  const uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (base + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = base + span, used_end = (start + bytes + 4095) & ~uintptr_t(4095);
  if (start > base) munmap(raw, start - base);
  if (end > used_end) munmap(reinterpret_cast<void*>(used_end), end - used_end);
  // Advice only: a kernel without THP keeps 4 KiB pages, which is correct.
  (void)madvise(reinterpret_cast<void*>(start), bytes, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(start);
#else
  void* p = ::operator new(bytes, std::nothrow);
  LONGKV_CHECK(p != nullptr, "cannot reserve %zu bytes of memory", bytes);
  return p;
#endif
}

void huge_free(void* p, size_t bytes) noexcept {
  if (!p) return;
#if defined(__linux__)
  munmap(p, bytes);
#else
  (void)bytes;
  ::operator delete(p);
#endif
}

}  // namespace longkv
