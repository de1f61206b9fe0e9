// GGUF v2/v3 reader and writer (ggml docs/gguf.md; facts in ../shared/FORMATS.md).
//
// Reading: the file is memory-mapped; every count, length, type, offset and
// size is validated against the file before use, so a corrupt or hostile
// file produces one Error naming the problem ("FILE: tensor 'x' data
// [a, b) runs past the end of the file (size n)") and never a crash or an
// allocation larger than the file could justify. Tensor data stays in the
// mapping (zero-copy); GgufFile must outlive any pointer into it.
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

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Scalars live in the matching field (integers of any
// width in i64/u64 with the original type kept in `type`); arrays hold
// their element type in `elem_type` and their elements in `arr` (which may
// themselves be arrays).
struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType elem_type = GgufType::U8;  // arrays only
  uint64_t u = 0;                     // U8/U16/U32/U64/BOOL
  int64_t i = 0;                      // I8/I16/I32/I64
  double f = 0;                       // F32/F64
  std::string s;                      // STRING
  std::vector<GgufValue> arr;         // ARRAY

  bool is_integer() const;
  bool is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
  // Value as integer / float / string; throw Error naming `key` on type mismatch.
  int64_t as_int(std::string_view key) const;
  double as_float(std::string_view key) const;  // accepts integers too
  const std::string& as_string(std::string_view key) const;

  static GgufValue make_u32(uint32_t v);
  static GgufValue make_i32(int32_t v);
  static GgufValue make_u64(uint64_t v);
  static GgufValue make_f32(float v);
  static GgufValue make_bool(bool v);
  static GgufValue make_string(std::string v);
  static GgufValue make_array(GgufType elem_type, std::vector<GgufValue> elems);
  static GgufValue make_string_array(const std::vector<std::string>& v);
  static GgufValue make_f32_array(const std::vector<float>& v);
  static GgufValue make_i32_array(const std::vector<int32_t>& v);
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ne[0] innermost (contiguous), up to 4 dims
  uint32_t type = 0;         // ggml_type id (may be one we cannot compute with)
  uint64_t offset = 0;       // relative to the data section
  uint64_t nbytes = 0;       // validated size of the data
  const uint8_t* data = nullptr;  // into the mapping

  uint64_t n_elements() const;
};

class GgufFile {
 public:
  // Open and validate a file (throws Error on any problem).
  static std::shared_ptr<GgufFile> open(const std::string& path);
  // Parse a buffer (used by open and by the fuzz target); `name` is used in
  // error messages. The buffer must outlive the returned object.
  static std::shared_ptr<GgufFile> parse(std::span<const uint8_t> bytes, const std::string& name);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::string& name() const { return name_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;  // nullptr if absent
  const GgufValue& get(std::string_view key) const;   // throws "FILE: missing metadata key 'k'"
  // Typed helpers with defaults for optional keys.
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t def) const;
  double get_float(std::string_view key) const;
  double get_float(std::string_view key, double def) const;
  std::string get_string(std::string_view key, std::string_view def = {}) const;
  bool get_bool(std::string_view key, bool def) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;  // null when parsed from a caller's buffer
  std::string name_;
  uint32_t version_ = 3;
  uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Writes GGUF v3 (little-endian, alignment from general.alignment or 32).
class GgufWriter {
 public:
  void set(std::string key, GgufValue value);  // replaces an existing key
  // Adds a tensor; `data` is copied. ne[0] innermost. Size must equal the
  // type's row bytes times the other dims.
  void add_tensor(std::string name, std::vector<uint64_t> ne, uint32_t ggml_type,
                  std::span<const uint8_t> data);
  // Writes the file (throws Error on I/O failure).
  void write(const std::string& path) const;
  // Serializes into memory (tests).
  std::vector<uint8_t> to_bytes() const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace longkv
