// GGUF reader and metadata accessors (layout facts in ../shared/FORMATS.md).
//
// The input is hostile until proven otherwise: every count is compared with
// the bytes left before anything is allocated for it, every size is computed
// with checked arithmetic, and every failure is one Error that starts with
// the file's name.
#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/weight_types.h"

namespace longkv {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint32_t kDefaultAlignment = 32;
constexpr size_t kMaxTensorName = 64;  // GGUF spec: names are at most 64 bytes
constexpr int kMaxDims = 4;
// Nested arrays cost 12 bytes each, so without a cap a small file could
// recurse deep enough to exhaust the stack.
constexpr int kMaxArrayDepth = 16;

// Fewest bytes one element of type t can occupy; used to bound counts
// before allocating. A string is at least its u64 length, an array at
// least its u32 element type and u64 count.
uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

// Keys and names come from the file; keep messages one printable line.
std::string printable(std::string_view s) {
  std::string out;
  const size_t limit = 80;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += strprintf("\\x%02x", c);
    }
  }
  if (s.size() > limit) out += "...";
  return out;
}

class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  size_t pos() const { return pos_; }
  size_t left() const { return bytes_.size() - pos_; }
  size_t size() const { return bytes_.size(); }
  const char* name() const { return name_.c_str(); }

  void need(uint64_t n, const std::string& what) const {
    if (n > left()) {
      fail("%s: truncated while reading %s (need %llu bytes at offset %zu, file has %zu)", name(),
           what.c_str(), static_cast<unsigned long long>(n), pos_, bytes_.size());
    }
  }

  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));  // unaligned-safe; host is little-endian
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > left()) {
      fail("%s: truncated while reading %s (string of %llu bytes at offset %zu, %zu bytes left)",
           name(), what.c_str(), static_cast<unsigned long long>(len), pos_, left());
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

  GgufValue read_value(GgufType type, const std::string& what, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufType::U8: v.u = read<uint8_t>(what); break;
      case GgufType::I8: v.i = read<int8_t>(what); break;
      case GgufType::U16: v.u = read<uint16_t>(what); break;
      case GgufType::I16: v.i = read<int16_t>(what); break;
      case GgufType::U32: v.u = read<uint32_t>(what); break;
      case GgufType::I32: v.i = read<int32_t>(what); break;
      case GgufType::U64: v.u = read<uint64_t>(what); break;
      case GgufType::I64: v.i = read<int64_t>(what); break;
      case GgufType::F32: v.f = read<float>(what); break;
      case GgufType::F64: v.f = read<double>(what); break;
      case GgufType::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1) fail("%s: %s: bool value is %u, must be 0 or 1", name(), what.c_str(), b);
        v.u = b;
        break;
      }
      case GgufType::STRING: v.s = read_string(what); break;
      case GgufType::ARRAY: read_array(v, what, depth); break;
    }
    return v;
  }

 private:
  void read_array(GgufValue& v, const std::string& what, int depth) {
    if (depth >= kMaxArrayDepth) {
      fail("%s: %s: arrays nested deeper than %d levels", name(), what.c_str(), kMaxArrayDepth);
    }
    const uint32_t et = read<uint32_t>(what + " element type");
    if (!valid_type(et)) fail("%s: %s: unknown array element type %u", name(), what.c_str(), et);
    v.elem_type = static_cast<GgufType>(et);
    const uint64_t n = read<uint64_t>(what + " element count");
    const uint64_t min_size = min_encoded_size(v.elem_type);
    if (n > left() / min_size) {
      fail("%s: truncated while reading %s: %llu elements of type %s need at least %llu bytes "
           "each, only %zu bytes left",
           name(), what.c_str(), static_cast<unsigned long long>(n), gguf_type_name(v.elem_type),
           static_cast<unsigned long long>(min_size), left());
    }
    v.arr.reserve(static_cast<size_t>(n));
    for (uint64_t k = 0; k < n; ++k) {
      // Build the element label lazily: most arrays are long and never fail.
      v.arr.push_back(read_value_labelled(v.elem_type, what, k, depth + 1));
    }
  }

  GgufValue read_value_labelled(GgufType t, const std::string& what, uint64_t k, int depth) {
    // Scalars of a fixed size fail only on truncation; check that up front
    // so the common path does not format a label per element.
    const uint64_t fixed = min_encoded_size(t);
    if (t != GgufType::STRING && t != GgufType::ARRAY && t != GgufType::BOOL && fixed <= left()) {
      return read_value(t, std::string(), depth);
    }
    return read_value(t, strprintf("%s[%llu]", what.c_str(), static_cast<unsigned long long>(k)),
                      depth);
  }

  std::span<const uint8_t> bytes_;
  const std::string& name_;
  size_t pos_ = 0;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "unknown";
}

// ---- GgufValue -------------------------------------------------------------

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16:
    case GgufType::U32: case GgufType::I32: case GgufType::U64: case GgufType::I64:
      return true;
    default:
      return false;
  }
}

static bool is_unsigned(GgufType t) {
  return t == GgufType::U8 || t == GgufType::U16 || t == GgufType::U32 || t == GgufType::U64;
}

int64_t GgufValue::as_int(std::string_view key) const {
  if (!is_integer()) {
    fail("metadata key '%s' has type %s, expected integer", printable(key).c_str(),
         gguf_type_name(type));
  }
  if (!is_unsigned(type)) return i;
  if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail("metadata key '%s' value %llu does not fit in int64", printable(key).c_str(),
         static_cast<unsigned long long>(u));
  }
  return static_cast<int64_t>(u);
}

double GgufValue::as_float(std::string_view key) const {
  if (is_float()) return f;
  if (is_integer()) return is_unsigned(type) ? static_cast<double>(u) : static_cast<double>(i);
  fail("metadata key '%s' has type %s, expected float", printable(key).c_str(),
       gguf_type_name(type));
}

const std::string& GgufValue::as_string(std::string_view key) const {
  if (type != GgufType::STRING) {
    fail("metadata key '%s' has type %s, expected string", printable(key).c_str(),
         gguf_type_name(type));
  }
  return s;
}

GgufValue GgufValue::make_u32(uint32_t v) {
  GgufValue r;
  r.type = GgufType::U32;
  r.u = v;
  return r;
}

GgufValue GgufValue::make_i32(int32_t v) {
  GgufValue r;
  r.type = GgufType::I32;
  r.i = v;
  return r;
}

GgufValue GgufValue::make_u64(uint64_t v) {
  GgufValue r;
  r.type = GgufType::U64;
  r.u = v;
  return r;
}

GgufValue GgufValue::make_f32(float v) {
  GgufValue r;
  r.type = GgufType::F32;
  r.f = v;
  return r;
}

GgufValue GgufValue::make_bool(bool v) {
  GgufValue r;
  r.type = GgufType::BOOL;
  r.u = v ? 1 : 0;
  return r;
}

GgufValue GgufValue::make_string(std::string v) {
  GgufValue r;
  r.type = GgufType::STRING;
  r.s = std::move(v);
  return r;
}

GgufValue GgufValue::make_array(GgufType elem_type, std::vector<GgufValue> elems) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = elem_type;
  r.arr = std::move(elems);
  return r;
}

GgufValue GgufValue::make_string_array(const std::vector<std::string>& v) {
  std::vector<GgufValue> elems;
  elems.reserve(v.size());
  for (const auto& s : v) elems.push_back(make_string(s));
  return make_array(GgufType::STRING, std::move(elems));
}

GgufValue GgufValue::make_f32_array(const std::vector<float>& v) {
  std::vector<GgufValue> elems;
  elems.reserve(v.size());
  for (float x : v) elems.push_back(make_f32(x));
  return make_array(GgufType::F32, std::move(elems));
}

GgufValue GgufValue::make_i32_array(const std::vector<int32_t>& v) {
  std::vector<GgufValue> elems;
  elems.reserve(v.size());
  for (int32_t x : v) elems.push_back(make_i32(x));
  return make_array(GgufType::I32, std::move(elems));
}

uint64_t GgufTensorInfo::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;  // validated against overflow when parsed
  return n;
}

// ---- GgufFile --------------------------------------------------------------

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  auto file = std::make_unique<MappedFile>(path);
  std::shared_ptr<GgufFile> g = parse(file->bytes(), path);
  g->file_ = std::move(file);
  return g;
}

std::shared_ptr<GgufFile> GgufFile::parse(std::span<const uint8_t> bytes, const std::string& name) {
  std::shared_ptr<GgufFile> g(new GgufFile());
  g->name_ = name;
  const char* fname = g->name_.c_str();
  Reader r(bytes, g->name_);

  const uint32_t magic = r.read<uint32_t>("magic");
  if (magic != kGgufMagic) fail("%s: bad magic 0x%08x (not a GGUF file)", fname, magic);
  const uint32_t version = r.read<uint32_t>("version");
  if (version != 0 && (version & 0xFFFF) == 0) {
    // A big-endian writer stores 3 as 0x03000000; nothing else flags it.
    fail("%s: big-endian GGUF not supported (version field 0x%08x)", fname, version);
  }
  if (version == 1) fail("%s: GGUF version 1 is not supported (only versions 2 and 3)", fname);
  if (version < 2 || version > 3) {
    fail("%s: unsupported GGUF version %u (only versions 2 and 3)", fname, version);
  }
  g->version_ = version;

  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  // Smallest KV: empty key (8) + type (4) + 1-byte value.
  if (n_kv > r.left() / 13) {
    fail("%s: truncated while reading metadata: %llu entries need at least 13 bytes each, only "
         "%zu bytes left",
         fname, static_cast<unsigned long long>(n_kv), r.left());
  }

  g->kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string entry = strprintf("metadata entry %llu", static_cast<unsigned long long>(k));
    std::string key = r.read_string(entry + " key");
    const std::string what = "metadata key '" + printable(key) + "'";
    const uint32_t t = r.read<uint32_t>(what + " type");
    if (!valid_type(t)) fail("%s: %s has unknown value type %u", fname, what.c_str(), t);
    GgufValue v = r.read_value(static_cast<GgufType>(t), what, 0);
    if (!g->kv_index_.emplace(key, g->kv_.size()).second) {
      fail("%s: duplicate metadata key '%s'", fname, printable(key).c_str());
    }
    g->kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = g->find("general.alignment")) {
    if (a->type != GgufType::U32) {
      fail("%s: general.alignment must be a u32 power of two, got type %s", fname,
           gguf_type_name(a->type));
    }
    if (a->u == 0 || (a->u & (a->u - 1)) != 0) {
      fail("%s: general.alignment must be a power of two, got %llu", fname,
           static_cast<unsigned long long>(a->u));
    }
    g->alignment_ = static_cast<uint32_t>(a->u);
  } else {
    g->alignment_ = kDefaultAlignment;
  }

  // Smallest tensor info: empty name (8) + n_dims (4) + one ne (8) + type (4) + offset (8).
  if (n_tensors > r.left() / 32) {
    fail("%s: truncated while reading tensor infos: %llu tensors need at least 32 bytes each, "
         "only %zu bytes left",
         fname, static_cast<unsigned long long>(n_tensors), r.left());
  }
  g->tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    const std::string entry = strprintf("tensor info %llu", static_cast<unsigned long long>(k));
    t.name = r.read_string(entry + " name");
    const std::string pname = printable(t.name);
    const std::string what = "tensor '" + pname + "'";
    if (t.name.size() > kMaxTensorName) {
      fail("%s: %s name is %zu bytes, longer than the GGUF limit of %zu", fname, what.c_str(),
           t.name.size(), kMaxTensorName);
    }
    const uint32_t n_dims = r.read<uint32_t>(what + " n_dims");
    if (n_dims == 0 || n_dims > kMaxDims) {
      fail("%s: %s has n_dims %u (must be 1 to %d)", fname, what.c_str(), n_dims, kMaxDims);
    }
    uint64_t n_elem = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.read<uint64_t>(what + strprintf(" ne[%u]", d));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          mul_overflows(n_elem, ne, &n_elem) ||
          n_elem > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail("%s: %s shape overflows int64 at ne[%u] = %llu", fname, what.c_str(), d,
             static_cast<unsigned long long>(ne));
      }
      t.ne.push_back(ne);
    }
    t.type = r.read<uint32_t>(what + " type");
    int block_size = 0, block_bytes = 0;
    if (!ggml_type_block(t.type, &block_size, &block_bytes) || block_size <= 0 || block_bytes <= 0) {
      fail("%s: %s has unknown or removed ggml type id %u", fname, what.c_str(), t.type);
    }
    if (t.ne[0] % static_cast<uint64_t>(block_size) != 0) {
      fail("%s: %s ne[0] = %llu is not a multiple of the %s block size %d", fname, what.c_str(),
           static_cast<unsigned long long>(t.ne[0]), ggml_type_name(t.type), block_size);
    }
    // Row bytes times the outer dims; only checked arithmetic, the shape is hostile.
    uint64_t nbytes = t.ne[0] / static_cast<uint64_t>(block_size);
    bool overflow = mul_overflows(nbytes, static_cast<uint64_t>(block_bytes), &nbytes);
    for (uint32_t d = 1; d < n_dims && !overflow; ++d) overflow = mul_overflows(nbytes, t.ne[d], &nbytes);
    if (overflow) fail("%s: %s data size overflows 64 bits", fname, what.c_str());
    t.nbytes = nbytes;
    t.offset = r.read<uint64_t>(what + " offset");
    if (t.offset % g->alignment_ != 0) {
      fail("%s: %s offset %llu is not a multiple of the alignment %u", fname, what.c_str(),
           static_cast<unsigned long long>(t.offset), g->alignment_);
    }
    if (!g->tensor_index_.emplace(t.name, g->tensors_.size()).second) {
      fail("%s: duplicate tensor name '%s'", fname, pname.c_str());
    }
    g->tensors_.push_back(std::move(t));
  }

  if (g->tensors_.empty()) return g;  // a metadata-only file needs no data section

  // The data section starts at the next multiple of the alignment.
  const uint64_t pad = (g->alignment_ - r.pos() % g->alignment_) % g->alignment_;
  r.need(pad, "padding before the tensor data");
  const uint64_t data_start = r.pos() + pad;
  const uint64_t data_size = r.size() - data_start;
  for (GgufTensorInfo& t : g->tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      // The end may not fit in 64 bits; print it only when it does.
      const uint64_t begin = data_start + std::min<uint64_t>(t.offset, r.size());
      if (t.offset <= data_size && t.nbytes <= std::numeric_limits<uint64_t>::max() - begin) {
        fail("%s: tensor '%s' data [%llu, %llu) runs past the end of the file (size %zu)", fname,
             printable(t.name).c_str(), static_cast<unsigned long long>(begin),
             static_cast<unsigned long long>(begin + t.nbytes), r.size());
      }
      fail("%s: tensor '%s' data (offset %llu in the data section at %llu, %llu bytes) runs past "
           "the end of the file (size %zu)",
           fname, printable(t.name).c_str(), static_cast<unsigned long long>(t.offset),
           static_cast<unsigned long long>(data_start), static_cast<unsigned long long>(t.nbytes),
           r.size());
    }
    t.data = bytes.data() + data_start + t.offset;
  }
  return g;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail("%s: missing metadata key '%s'", name_.c_str(), printable(key).c_str());
  return *v;
}

// GgufValue's messages name the key; the file's name goes in front here.
template <typename F>
static auto with_file_name(const std::string& name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    fail("%s: %s", name.c_str(), e.what());
  }
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& v = get(key);
  return with_file_name(name_, [&] { return v.as_int(key); });
}

int64_t GgufFile::get_int(std::string_view key, int64_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  return with_file_name(name_, [&] { return v->as_int(key); });
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& v = get(key);
  return with_file_name(name_, [&] { return v.as_float(key); });
}

double GgufFile::get_float(std::string_view key, double def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  return with_file_name(name_, [&] { return v->as_float(key); });
}

std::string GgufFile::get_string(std::string_view key, std::string_view def) const {
  const GgufValue* v = find(key);
  if (!v) return std::string(def);
  return with_file_name(name_, [&] { return v->as_string(key); });
}

bool GgufFile::get_bool(std::string_view key, bool def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::BOOL) {
    fail("%s: metadata key '%s' has type %s, expected bool", name_.c_str(), printable(key).c_str(),
         gguf_type_name(v->type));
  }
  return v->u != 0;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace longkv
