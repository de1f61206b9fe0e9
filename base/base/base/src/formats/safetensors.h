// safetensors reader (huggingface/safetensors; facts in ../shared/FORMATS.md).
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON starting
// with '{' (may be padded with trailing spaces), then the byte buffer. The
// JSON maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end)}
// with offsets relative to the buffer, plus an optional "__metadata__"
// string->string map.
//
// Everything is validated before use, as the reference reader does: header
// length within the file and <= 100,000,000, duplicate keys rejected, known
// dtypes only, shape products without overflow, end - begin equal to the
// tensor's byte size, and the tensors sorted by offset tiling the buffer
// exactly (no holes, no overlaps, last end == buffer length). Problems throw
// one Error line naming the file and the tensor. Tensor data stays in the
// mapping (zero-copy); SafetensorsFile must outlive any pointer into it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/mapped_file.h"

namespace longkv {

enum class SafetensorsDtype {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};
const char* safetensors_dtype_name(SafetensorsDtype d);
int safetensors_dtype_bits(SafetensorsDtype d);
// Parses the JSON spelling ("F32"); returns false when unknown.
bool parse_safetensors_dtype(std::string_view s, SafetensorsDtype* out);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::F32;
  std::vector<uint64_t> shape;  // outermost first (PyTorch order); empty = scalar
  uint64_t begin = 0, end = 0;  // [begin, end) relative to the byte buffer
  const uint8_t* data = nullptr;  // into the file's buffer (begin applied)

  uint64_t numel() const;  // product of shape (1 for a scalar)
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Map and validate a file (throws Error on any problem).
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // Validate a buffer (used by open and the fuzz target); `name` prefixes
  // error messages. The buffer must outlive the returned object.
  static std::shared_ptr<SafetensorsFile> parse(std::span<const uint8_t> bytes,
                                                const std::string& name);

  const std::string& name() const { return name_; }
  // Tensors sorted by name.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(std::string_view name) const;  // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Offset of the byte buffer within the file (8 + header length).
  uint64_t data_offset() const { return data_offset_; }

 private:
  SafetensorsFile() = default;
  std::unique_ptr<MappedFile> file_;  // null when parsed from a caller's buffer
  std::string name_;
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace longkv
