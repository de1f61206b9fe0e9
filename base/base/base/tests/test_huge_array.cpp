// make_huge_array: the KV caches' storage (huge-page-advised anonymous
// mappings): sizes, alignment, zero pages, every byte writable, freed on
// destruction and on move.
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

#include "core/huge_array.h"

namespace longkv {
namespace {

TEST(HugeArray, EmptyIsNull) {
  auto a = make_huge_array<float>(0);
  EXPECT_EQ(a.get(), nullptr);
}

TEST(HugeArray, SmallAndLargeAreZeroWritableAndAligned) {
  for (size_t n : {size_t(1), size_t(4097), (size_t(5) << 20) + 123, size_t(2) << 20}) {
    auto a = make_huge_array<uint8_t>(n);
    ASSERT_NE(a.get(), nullptr) << n;
    const auto addr = reinterpret_cast<uintptr_t>(a.get());
    EXPECT_EQ(addr % 4096, 0u) << n;
    if (n >= (size_t(2) << 20)) {
      EXPECT_EQ(addr % (size_t(2) << 20), 0u) << "large arrays start on a 2 MiB boundary";
    }
    // Linux anonymous mappings read as zero before the first write.
    for (size_t i = 0; i < n; i += 4093) EXPECT_EQ(a[i], 0) << n << " at " << i;
    EXPECT_EQ(a[n - 1], 0);
    for (size_t i = 0; i < n; ++i) a[i] = static_cast<uint8_t>(i * 7 + 1);
    for (size_t i = 0; i < n; i += 997) ASSERT_EQ(a[i], static_cast<uint8_t>(i * 7 + 1)) << n;
    EXPECT_EQ(a[n - 1], static_cast<uint8_t>((n - 1) * 7 + 1));
  }
}

TEST(HugeArray, MoveKeepsDataAndSize) {
  auto a = make_huge_array<uint16_t>(3 << 20);
  a[0] = 11;
  a[(3 << 20) - 1] = 22;
  HugeArray<uint16_t> b = std::move(a);
  EXPECT_EQ(a.get(), nullptr);
  EXPECT_EQ(b[0], 11);
  EXPECT_EQ(b[(3 << 20) - 1], 22);
  EXPECT_EQ(b.get_deleter().bytes, size_t(3 << 20) * sizeof(uint16_t));
  b = make_huge_array<uint16_t>(10);  // frees the old mapping
  EXPECT_EQ(b[9], 0);
}

}  // namespace
}  // namespace longkv
