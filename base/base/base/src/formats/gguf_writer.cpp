// GGUF v3 writer. Everything it produces must pass our own reader (and
// ggml's): tensors are laid out contiguously, in order, each starting on an
// alignment boundary, with zero padding in between.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/weight_types.h"

namespace longkv {

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr size_t kMaxTensorName = 64;

class ByteSink {
 public:
  explicit ByteSink(std::vector<uint8_t>& out) : out_(out) {}

  template <typename T>
  void put(T v) {
    // resize + memcpy rather than insert(b, b + n): GCC 12 flags the small
    // insert with a false -Wstringop-overflow.
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));  // host is little-endian, as is GGUF
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void put_bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void pad_to(uint64_t alignment) {
    while (out_.size() % alignment != 0) out_.push_back(0);
  }
  size_t size() const { return out_.size(); }

 private:
  std::vector<uint8_t>& out_;
};

void put_value(ByteSink& out, const GgufValue& v, const std::string& key) {
  switch (v.type) {
    case GgufType::U8: out.put<uint8_t>(static_cast<uint8_t>(v.u)); break;
    case GgufType::I8: out.put<int8_t>(static_cast<int8_t>(v.i)); break;
    case GgufType::U16: out.put<uint16_t>(static_cast<uint16_t>(v.u)); break;
    case GgufType::I16: out.put<int16_t>(static_cast<int16_t>(v.i)); break;
    case GgufType::U32: out.put<uint32_t>(static_cast<uint32_t>(v.u)); break;
    case GgufType::I32: out.put<int32_t>(static_cast<int32_t>(v.i)); break;
    case GgufType::U64: out.put<uint64_t>(v.u); break;
    case GgufType::I64: out.put<int64_t>(v.i); break;
    case GgufType::F32: out.put<float>(static_cast<float>(v.f)); break;
    case GgufType::F64: out.put<double>(v.f); break;
    case GgufType::BOOL: out.put<uint8_t>(v.u ? 1 : 0); break;
    case GgufType::STRING: out.put_string(v.s); break;
    case GgufType::ARRAY:
      out.put<uint32_t>(static_cast<uint32_t>(v.elem_type));
      out.put<uint64_t>(v.arr.size());
      for (size_t k = 0; k < v.arr.size(); ++k) {
        // A mixed array would serialize into bytes no reader can parse back.
        if (v.arr[k].type != v.elem_type) {
          fail("GgufWriter: metadata key '%s' element %zu has type %s, array holds %s", key.c_str(),
               k, gguf_type_name(v.arr[k].type), gguf_type_name(v.elem_type));
        }
        put_value(out, v.arr[k], key);
      }
      break;
    default:
      fail("GgufWriter: metadata key '%s' has unknown type %u", key.c_str(),
           static_cast<unsigned>(v.type));
  }
}

}  // namespace

void GgufWriter::set(std::string key, GgufValue value) {
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_tensor(std::string name, std::vector<uint64_t> ne, uint32_t ggml_type,
                            std::span<const uint8_t> data) {
  LONGKV_CHECK(name.size() <= kMaxTensorName, "GgufWriter: tensor name '%s' is longer than %zu bytes",
               name.c_str(), kMaxTensorName);
  LONGKV_CHECK(!ne.empty() && ne.size() <= 4, "GgufWriter: tensor '%s' has %zu dims (must be 1 to 4)",
               name.c_str(), ne.size());
  for (const Tensor& t : tensors_) {
    LONGKV_CHECK(t.name != name, "GgufWriter: duplicate tensor name '%s'", name.c_str());
  }
  int block_size = 0, block_bytes = 0;
  LONGKV_CHECK(ggml_type_block(ggml_type, &block_size, &block_bytes),
               "GgufWriter: tensor '%s' has unknown ggml type id %u", name.c_str(), ggml_type);
  LONGKV_CHECK(ne[0] % static_cast<uint64_t>(block_size) == 0,
               "GgufWriter: tensor '%s' ne[0] = %llu is not a multiple of the block size %d",
               name.c_str(), static_cast<unsigned long long>(ne[0]), block_size);
  uint64_t nbytes = ne[0] / static_cast<uint64_t>(block_size) * static_cast<uint64_t>(block_bytes);
  for (size_t d = 1; d < ne.size(); ++d) {
    LONGKV_CHECK(!__builtin_mul_overflow(nbytes, ne[d], &nbytes),
                 "GgufWriter: tensor '%s' size overflows", name.c_str());
  }
  LONGKV_CHECK(data.size() == nbytes, "GgufWriter: tensor '%s' has %zu bytes of data, shape needs %llu",
               name.c_str(), data.size(), static_cast<unsigned long long>(nbytes));
  tensors_.push_back(Tensor{std::move(name), std::move(ne), ggml_type,
                            std::vector<uint8_t>(data.begin(), data.end())});
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  uint32_t alignment = kDefaultAlignment;
  for (const auto& [key, v] : kv_) {
    if (key != "general.alignment") continue;
    LONGKV_CHECK(v.type == GgufType::U32 && v.u != 0 && (v.u & (v.u - 1)) == 0 && v.u <= UINT32_MAX,
                 "GgufWriter: general.alignment must be a u32 power of two");
    alignment = static_cast<uint32_t>(v.u);
  }

  std::vector<uint8_t> bytes;
  ByteSink out(bytes);
  out.put<uint32_t>(0x46554747);  // "GGUF"
  out.put<uint32_t>(kVersion);
  out.put<uint64_t>(tensors_.size());
  out.put<uint64_t>(kv_.size());
  for (const auto& [key, v] : kv_) {
    out.put_string(key);
    out.put<uint32_t>(static_cast<uint32_t>(v.type));
    put_value(out, v, key);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    out.put_string(t.name);
    out.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) out.put<uint64_t>(d);
    out.put<uint32_t>(t.type);
    out.put<uint64_t>(offset);
    offset += (t.data.size() + alignment - 1) / alignment * alignment;
  }
  out.pad_to(alignment);
  for (const Tensor& t : tensors_) {
    out.put_bytes(t.data);
    out.pad_to(alignment);
  }
  return bytes;
}

void GgufWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = to_bytes();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail("%s: cannot create: %s", path.c_str(), std::strerror(errno));
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int write_err = n == bytes.size() ? 0 : errno;
  // fclose flushes, so a full disk may only show up here.
  if (std::fclose(f) != 0 && write_err == 0) {
    fail("%s: cannot write: %s", path.c_str(), std::strerror(errno));
  }
  if (n != bytes.size()) fail("%s: cannot write: %s", path.c_str(), std::strerror(write_err));
}

}  // namespace longkv
