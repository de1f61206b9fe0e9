#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace longkv {

namespace {

using nlohmann::json;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  int bits;
};

constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::BOOL, "BOOL", 8},
    {SafetensorsDtype::F4, "F4", 4},
    {SafetensorsDtype::F6_E2M3, "F6_E2M3", 6},
    {SafetensorsDtype::F6_E3M2, "F6_E3M2", 6},
    {SafetensorsDtype::U8, "U8", 8},
    {SafetensorsDtype::I8, "I8", 8},
    {SafetensorsDtype::F8_E5M2, "F8_E5M2", 8},
    {SafetensorsDtype::F8_E4M3, "F8_E4M3", 8},
    {SafetensorsDtype::F8_E8M0, "F8_E8M0", 8},
    {SafetensorsDtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {SafetensorsDtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {SafetensorsDtype::I16, "I16", 16},
    {SafetensorsDtype::U16, "U16", 16},
    {SafetensorsDtype::F16, "F16", 16},
    {SafetensorsDtype::BF16, "BF16", 16},
    {SafetensorsDtype::I32, "I32", 32},
    {SafetensorsDtype::U32, "U32", 32},
    {SafetensorsDtype::F32, "F32", 32},
    {SafetensorsDtype::C64, "C64", 64},
    {SafetensorsDtype::F64, "F64", 64},
    {SafetensorsDtype::I64, "I64", 64},
    {SafetensorsDtype::U64, "U64", 64},
};
static_assert(std::size(kDtypes) == static_cast<size_t>(SafetensorsDtype::U64) + 1);

// The reference reader's limit: a larger header is treated as hostile.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Strips nlohmann's "[json.exception.parse_error.101] " prefix so the message
// stays one readable line.
std::string json_error_text(const std::exception& e) {
  std::string s = e.what();
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Parses the header JSON, rejecting duplicate keys in any object (nlohmann
// keeps the last one silently; the format forbids them).
json parse_header_json(std::string_view text, const std::string& name) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() && duplicate.empty()) {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(k).second) duplicate = k;
        }
        break;
      default:
        break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    fail("%s: header is not valid JSON: %s", name.c_str(), json_error_text(e).c_str());
  }
  LONGKV_CHECK(duplicate.empty(), "%s: header has duplicate key '%s'", name.c_str(),
               duplicate.c_str());
  LONGKV_CHECK(j.is_object(), "%s: header is not a JSON object", name.c_str());
  return j;
}

uint64_t json_u64(const json& v, const std::string& name, const std::string& tensor,
                  const char* field) {
  LONGKV_CHECK(v.is_number_unsigned(), "%s: tensor '%s': %s entries must be non-negative integers",
               name.c_str(), tensor.c_str(), field);
  return v.get<uint64_t>();
}

}  // namespace

const char* safetensors_dtype_name(SafetensorsDtype d) {
  return kDtypes[static_cast<size_t>(d)].name;
}

int safetensors_dtype_bits(SafetensorsDtype d) { return kDtypes[static_cast<size_t>(d)].bits; }

bool parse_safetensors_dtype(std::string_view s, SafetensorsDtype* out) {
  for (const auto& d : kDtypes) {
    if (s == d.name) {
      *out = d.dtype;
      return true;
    }
  }
  return false;
}

uint64_t SafetensorsTensor::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // overflow excluded at parse time
  return n;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto file = std::make_unique<MappedFile>(path);
  auto st = parse(file->bytes(), path);
  st->file_ = std::move(file);
  return st;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::parse(std::span<const uint8_t> bytes,
                                                        const std::string& name) {
  const char* nm = name.c_str();
  const uint64_t size = bytes.size();
  LONGKV_CHECK(size >= 8, "%s: file has %llu bytes, too small for the 8-byte header length", nm,
               static_cast<unsigned long long>(size));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[static_cast<size_t>(i)];
  LONGKV_CHECK(n <= kMaxHeaderBytes, "%s: header length %llu exceeds the limit of %llu bytes", nm,
               static_cast<unsigned long long>(n), static_cast<unsigned long long>(kMaxHeaderBytes));
  LONGKV_CHECK(n <= size - 8, "%s: header length %llu runs past the end of the file (size %llu)",
               nm, static_cast<unsigned long long>(n), static_cast<unsigned long long>(size));
  LONGKV_CHECK(n > 0 && bytes[8] == '{', "%s: header does not start with '{'", nm);

  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), n);
  const json header = parse_header_json(text, name);

  std::shared_ptr<SafetensorsFile> st(new SafetensorsFile());
  st->name_ = name;
  st->data_offset_ = 8 + n;
  const uint8_t* buffer = bytes.data() + st->data_offset_;
  const uint64_t buffer_size = size - st->data_offset_;

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      LONGKV_CHECK(value.is_object(), "%s: __metadata__ is not a JSON object", nm);
      for (const auto& [mk, mv] : value.items()) {
        LONGKV_CHECK(mv.is_string(), "%s: __metadata__ value '%s' is not a string", nm, mk.c_str());
        st->metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    const char* tn = key.c_str();
    LONGKV_CHECK(value.is_object(), "%s: tensor '%s' entry is not a JSON object", nm, tn);
    const auto dt = value.find("dtype");
    const auto sh = value.find("shape");
    const auto off = value.find("data_offsets");
    LONGKV_CHECK(dt != value.end() && dt->is_string(), "%s: tensor '%s' has no dtype string", nm, tn);
    LONGKV_CHECK(sh != value.end() && sh->is_array(), "%s: tensor '%s' has no shape array", nm, tn);
    LONGKV_CHECK(off != value.end() && off->is_array() && off->size() == 2,
                 "%s: tensor '%s' has no data_offsets pair", nm, tn);

    SafetensorsTensor t;
    t.name = key;
    const auto& dts = dt->get_ref<const std::string&>();
    LONGKV_CHECK(parse_safetensors_dtype(dts, &t.dtype), "%s: tensor '%s' has unknown dtype '%s'",
                 nm, tn, dts.c_str());
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      const uint64_t v = json_u64(d, name, key, "shape");
      t.shape.push_back(v);
      overflow = overflow || __builtin_mul_overflow(numel, v, &numel);
    }
    uint64_t bits = 0;
    overflow = overflow ||
               __builtin_mul_overflow(numel, static_cast<uint64_t>(safetensors_dtype_bits(t.dtype)),
                                      &bits);
    LONGKV_CHECK(!overflow, "%s: tensor '%s' shape %s overflows", nm, tn,
                 shape_string(t.shape).c_str());
    LONGKV_CHECK(bits % 8 == 0, "%s: tensor '%s' (%s, shape %s) is not a whole number of bytes",
                 nm, tn, dts.c_str(), shape_string(t.shape).c_str());
    t.begin = json_u64((*off)[0], name, key, "data_offsets");
    t.end = json_u64((*off)[1], name, key, "data_offsets");
    LONGKV_CHECK(t.begin <= t.end, "%s: tensor '%s' has data_offsets [%llu, %llu) with end before begin",
                 nm, tn, static_cast<unsigned long long>(t.begin),
                 static_cast<unsigned long long>(t.end));
    LONGKV_CHECK(t.end <= buffer_size,
                 "%s: tensor '%s' data [%llu, %llu) runs past the end of the byte buffer (size %llu)",
                 nm, tn, static_cast<unsigned long long>(t.begin),
                 static_cast<unsigned long long>(t.end),
                 static_cast<unsigned long long>(buffer_size));
    LONGKV_CHECK(t.end - t.begin == bits / 8,
                 "%s: tensor '%s' (%s, shape %s) needs %llu bytes but data_offsets [%llu, %llu) hold %llu",
                 nm, tn, dts.c_str(), shape_string(t.shape).c_str(),
                 static_cast<unsigned long long>(bits / 8), static_cast<unsigned long long>(t.begin),
                 static_cast<unsigned long long>(t.end),
                 static_cast<unsigned long long>(t.end - t.begin));
    t.data = buffer + t.begin;
    st->index_.emplace(t.name, st->tensors_.size());
    st->tensors_.push_back(std::move(t));
  }

  // The tensors, in offset order, must tile the buffer exactly: a hole
  // could hide data, an overlap aliases two tensors.
  std::vector<size_t> order(st->tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto& ta = st->tensors_[a];
    const auto& tb = st->tensors_[b];
    return ta.begin != tb.begin ? ta.begin < tb.begin : ta.end < tb.end;
  });
  uint64_t expected = 0;
  const SafetensorsTensor* prev = nullptr;
  for (size_t i : order) {
    const auto& t = st->tensors_[i];
    if (t.begin < expected) {
      fail("%s: tensor '%s' data [%llu, %llu) overlaps tensor '%s' (ends at %llu)", nm,
           t.name.c_str(), static_cast<unsigned long long>(t.begin),
           static_cast<unsigned long long>(t.end), prev->name.c_str(),
           static_cast<unsigned long long>(expected));
    }
    if (t.begin > expected) {
      fail("%s: hole in the byte buffer: bytes [%llu, %llu) belong to no tensor (next is '%s')", nm,
           static_cast<unsigned long long>(expected), static_cast<unsigned long long>(t.begin),
           t.name.c_str());
    }
    expected = t.end;
    prev = &t;
  }
  LONGKV_CHECK(expected == buffer_size,
               "%s: byte buffer has %llu bytes but the tensors cover only %llu", nm,
               static_cast<unsigned long long>(buffer_size),
               static_cast<unsigned long long>(expected));
  return st;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace longkv
