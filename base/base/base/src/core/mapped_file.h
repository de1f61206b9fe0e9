// Read-only memory mapping of a whole file (model weights are used in place).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace longkv {

class MappedFile {
 public:
  // Throws Error("PATH: reason") if the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace longkv
