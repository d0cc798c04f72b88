// frontend/gguf.cpp — GGUF parsing with bounds checks on every read.
//
// The reader never trusts a count or an offset: each is checked against the bytes left
// in the file before anything is allocated or dereferenced, so a truncated or hostile
// file fails with a message instead of a crash (this file is fuzzed).
#include "frontend/gguf.h"

#include <cstring>
#include <limits>

#include <fmt/format.h>

namespace kiln {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringLen = 1ull << 26;
constexpr uint64_t kMaxDims = 4;
// No real tensor dimension comes near this; larger values are corrupt or hostile.
constexpr uint64_t kMaxDim = 1ull << 32;
constexpr uint64_t kMaxElements = 1ull << 40;

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}

  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }

  template <typename T>
  Result<T> read(std::string_view what) {
    if (left() < sizeof(T))
      return make_error("{}: truncated at byte {} while reading {}", path_, pos_, what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  Result<std::string_view> read_string(std::string_view what) {
    KILN_ASSIGN(uint64_t len, read<uint64_t>(what));
    if (len > kMaxStringLen || len > left())
      return make_error("{}: {} has length {} at byte {}, beyond the end of the file", path_,
                        what, len, pos_);
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& path_;
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::STRING: return 8;  // at least its length field
    case GgufType::ARRAY: return 12;
  }
  return 0;
}

bool valid_type(uint32_t t) { return t <= 12; }

// Reads one scalar of type t as int64/uint64/double/bool into the value variant.
Result<GgufValue> read_scalar(Cursor& c, GgufType t, std::string_view key) {
  GgufValue v;
  v.type = t;
  std::string what = fmt::format("value of '{}'", key);
  switch (t) {
    case GgufType::U8: { KILN_ASSIGN(auto x, c.read<uint8_t>(what)); v.v = (uint64_t)x; break; }
    case GgufType::I8: { KILN_ASSIGN(auto x, c.read<int8_t>(what)); v.v = (int64_t)x; break; }
    case GgufType::U16: { KILN_ASSIGN(auto x, c.read<uint16_t>(what)); v.v = (uint64_t)x; break; }
    case GgufType::I16: { KILN_ASSIGN(auto x, c.read<int16_t>(what)); v.v = (int64_t)x; break; }
    case GgufType::U32: { KILN_ASSIGN(auto x, c.read<uint32_t>(what)); v.v = (uint64_t)x; break; }
    case GgufType::I32: { KILN_ASSIGN(auto x, c.read<int32_t>(what)); v.v = (int64_t)x; break; }
    case GgufType::U64: { KILN_ASSIGN(auto x, c.read<uint64_t>(what)); v.v = (uint64_t)x; break; }
    case GgufType::I64: { KILN_ASSIGN(auto x, c.read<int64_t>(what)); v.v = (int64_t)x; break; }
    case GgufType::F32: { KILN_ASSIGN(auto x, c.read<float>(what)); v.v = (double)x; break; }
    case GgufType::F64: { KILN_ASSIGN(auto x, c.read<double>(what)); v.v = x; break; }
    case GgufType::BOOL: {
      KILN_ASSIGN(auto x, c.read<uint8_t>(what));
      v.v = x != 0;
      break;
    }
    case GgufType::STRING: { KILN_ASSIGN(auto s, c.read_string(what)); v.v = s; break; }
    case GgufType::ARRAY: return make_error("nested array");
  }
  return v;
}

Result<GgufValue> read_value(Cursor& c, GgufType t, std::string_view key, const std::string& path) {
  if (t != GgufType::ARRAY) return read_scalar(c, t, key);
  std::string what = fmt::format("array '{}'", key);
  KILN_ASSIGN(uint32_t et, c.read<uint32_t>(what));
  if (!valid_type(et) || et == (uint32_t)GgufType::ARRAY)
    return make_error("{}: key '{}': array element type {} is not a valid GGUF value type",
                      path, key, et);
  KILN_ASSIGN(uint64_t n, c.read<uint64_t>(what));
  GgufType elem = (GgufType)et;
  // Each element needs at least scalar_size bytes; reject counts the file cannot hold.
  if (n > c.left() / scalar_size(elem))
    return make_error("{}: key '{}': array of {} {} elements does not fit in the {} bytes left",
                      path, key, n, gguf_type_name(elem), c.left());
  GgufArray a;
  a.elem = elem;
  if (elem == GgufType::STRING) a.strings.reserve(n);
  else if (elem == GgufType::F32 || elem == GgufType::F64) a.floats.reserve(n);
  else a.ints.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    auto r = read_scalar(c, elem, key);
    if (!r.ok())
      return make_error("{}: key '{}': element {} of {}: {}", path, key, i, n, r.error().message);
    auto& v = r->v;
    if (auto* s = std::get_if<std::string_view>(&v)) a.strings.push_back(*s);
    else if (auto* d = std::get_if<double>(&v)) a.floats.push_back(*d);
    else if (auto* b = std::get_if<bool>(&v)) a.ints.push_back(*b);
    else if (auto* u = std::get_if<uint64_t>(&v)) a.ints.push_back((int64_t)*u);
    else a.ints.push_back(std::get<int64_t>(v));
  }
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.v = std::move(a);
  return v;
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",   "u16",    "i16",   "u32",
                                                "i32", "f32",  "bool",   "string", "array",
                                                "u64", "i64",  "f64"};
  auto i = static_cast<uint32_t>(t);
  return i < 13 ? kNames[i] : "invalid";
}

uint64_t GgufArray::size() const {
  return elem == GgufType::STRING ? strings.size()
         : (elem == GgufType::F32 || elem == GgufType::F64) ? floats.size()
                                                            : ints.size();
}

std::optional<int64_t> GgufValue::as_int() const {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v)) {
    if (*u > (uint64_t)std::numeric_limits<int64_t>::max()) return std::nullopt;
    return (int64_t)*u;
  }
  return std::nullopt;
}

std::optional<double> GgufValue::as_float() const {
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto i = as_int()) return (double)*i;
  return std::nullopt;
}

std::optional<bool> GgufValue::as_bool() const {
  if (auto* b = std::get_if<bool>(&v)) return *b;
  return std::nullopt;
}

std::optional<std::string_view> GgufValue::as_string() const {
  if (auto* s = std::get_if<std::string_view>(&v)) return *s;
  return std::nullopt;
}

const GgufArray* GgufValue::as_array() const { return std::get_if<GgufArray>(&v); }

std::string GgufValue::to_display(size_t max_items, size_t max_chars) const {
  auto quote = [max_chars](std::string_view s) {
    std::string out = "\"";
    for (char ch : s.substr(0, max_chars)) {
      if (ch == '\n') out += "\\n";
      else if (ch == '"') out += "\\\"";
      else out += ch;
    }
    if (s.size() > max_chars) out += "...";
    return out + "\"";
  };
  if (auto* a = as_array()) {
    std::string out = fmt::format("[{} x {}]", a->size(), gguf_type_name(a->elem));
    out += " [";
    for (size_t i = 0; i < a->size() && i < max_items; ++i) {
      if (i) out += ", ";
      if (a->elem == GgufType::STRING) out += quote(a->strings[i]);
      else if (!a->floats.empty()) out += fmt::format("{}", a->floats[i]);
      else out += fmt::format("{}", a->ints[i]);
    }
    if (a->size() > max_items) out += ", ...";
    return out + "]";
  }
  if (auto s = as_string()) return quote(*s);
  if (auto b = as_bool()) return *b ? "true" : "false";
  if (auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  if (auto* u = std::get_if<uint64_t>(&v)) return fmt::format("{}", *u);
  return fmt::format("{}", std::get<int64_t>(v));
}

uint64_t GgufTensor::elements() const {
  uint64_t n = 1;
  for (auto d : ne) n *= d;
  return n;
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  KILN_ASSIGN(MappedFile f, MappedFile::open(path));
  return parse(std::move(f));
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse_owned(std::string bytes, std::string name,
                                                        GgufExternalData external) {
  auto owned = std::make_unique<const std::string>(std::move(bytes));
  KILN_ASSIGN(auto g, parse(MappedFile::borrow(owned->data(), owned->size(), std::move(name)), &external));
  g->owned_ = std::move(owned);  // the heap buffer stays where it is: views into it hold
  g->external_ = std::move(external.keep_alive);
  return g;
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse(MappedFile file) { return parse(std::move(file), nullptr); }

Result<std::unique_ptr<GgufFile>> GgufFile::parse(MappedFile file, const GgufExternalData* external) {
  auto g = std::unique_ptr<GgufFile>(new GgufFile());
  g->file_ = std::move(file);
  const std::string& path = g->file_.path();
  Cursor c(g->file_.data(), g->file_.size(), path);

  KILN_ASSIGN(uint32_t magic, c.read<uint32_t>("the magic number"));
  if (magic != kMagic)
    return make_error("{}: not a GGUF file (magic 0x{:08x}, expected 0x{:08x} \"GGUF\")", path,
                      magic, kMagic);
  KILN_ASSIGN(g->version_, c.read<uint32_t>("the version"));
  if (g->version_ != 2 && g->version_ != 3)
    return make_error("{}: GGUF version {} is not supported (expected 2 or 3)", path,
                      g->version_);
  KILN_ASSIGN(uint64_t n_tensors, c.read<uint64_t>("the tensor count"));
  KILN_ASSIGN(uint64_t n_kv, c.read<uint64_t>("the metadata count"));
  // A key needs >= 12 bytes and a tensor info >= 24: reject counts the file cannot hold.
  if (n_kv > c.left() / 12)
    return make_error("{}: metadata count {} is impossible for a file of {} bytes", path, n_kv,
                      g->file_.size());
  if (n_tensors > c.left() / 24)
    return make_error("{}: tensor count {} is impossible for a file of {} bytes", path,
                      n_tensors, g->file_.size());

  g->kv_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    KILN_ASSIGN(std::string_view key, c.read_string(fmt::format("metadata key #{}", i)));
    KILN_ASSIGN(uint32_t t, c.read<uint32_t>(fmt::format("the type of '{}'", key)));
    if (!valid_type(t))
      return make_error("{}: key '{}' has unknown value type {} (expected 0..12)", path, key, t);
    KILN_ASSIGN(GgufValue v, read_value(c, (GgufType)t, key, path));
    if (g->kv_index_.count(key))
      return make_error("{}: key '{}' appears twice", path, key);
    g->kv_index_[key] = g->kv_.size();
    g->kv_.emplace_back(key, std::move(v));
  }

  if (const GgufValue* a = g->find("general.alignment")) {
    auto al = a->as_int();
    if (!al || *al <= 0 || *al > (1 << 16) || (*al & (*al - 1)))
      return make_error("{}: key 'general.alignment' = {} is not a power of two up to 65536",
                        path, a->to_display());
    g->alignment_ = (uint64_t)*al;
  }

  g->tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    KILN_ASSIGN(t.name, c.read_string(fmt::format("the name of tensor #{}", i)));
    std::string what = fmt::format("tensor '{}'", t.name);
    KILN_ASSIGN(uint32_t nd, c.read<uint32_t>(what));
    if (nd == 0 || nd > kMaxDims)
      return make_error("{}: tensor '{}' has {} dimensions (expected 1..{})", path, t.name, nd,
                        kMaxDims);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      KILN_ASSIGN(uint64_t n, c.read<uint64_t>(what));
      if (n == 0 || n > kMaxDim)
        return make_error("{}: tensor '{}' dimension {} is {} (expected 1..{})", path, t.name, d,
                          n, kMaxDim);
      if (elems > kMaxElements / n)
        return make_error("{}: tensor '{}' has more than {} elements", path, t.name,
                          kMaxElements);
      elems *= n;
      t.ne.push_back(n);
    }
    KILN_ASSIGN(uint32_t type, c.read<uint32_t>(what));
    auto dt = dtype_from_ggml(type);
    if (!dt)
      return make_error(
          "{}: tensor '{}' has type {} ({}), which kiln does not support (supported: f32, "
          "f16, bf16, q4_0, q4_1, q8_0)",
          path, t.name, ggml_type_name(type), type);
    t.type = *dt;
    KILN_ASSIGN(t.offset, c.read<uint64_t>(what));
    const DTypeInfo& info = dtype_info(t.type);
    if (t.ne[0] % info.block_elems != 0)
      return make_error("{}: tensor '{}' row length {} is not a multiple of the {} block size {}",
                        path, t.name, t.ne[0], info.name, info.block_elems);
    t.nbytes = dtype_bytes(t.type, elems);
    if (g->tensor_index_.count(t.name))
      return make_error("{}: tensor '{}' appears twice", path, t.name);
    g->tensor_index_[t.name] = g->tensors_.size();
    g->tensors_.push_back(std::move(t));
  }

  uint64_t pos = c.pos();
  g->data_offset_ = (pos + g->alignment_ - 1) / g->alignment_ * g->alignment_;
  uint64_t size = g->file_.size();
  for (auto& t : g->tensors_) {
    if (external) {
      if (auto it = external->tensors.find(t.name); it != external->tensors.end()) {
        t.data = it->second;
        continue;
      }
    }
    if (t.offset % g->alignment_ != 0)
      return make_error("{}: tensor '{}' offset {} is not aligned to {}", path, t.name, t.offset,
                        g->alignment_);
    if (g->data_offset_ > size || t.offset > size - g->data_offset_ ||
        t.nbytes > size - g->data_offset_ - t.offset)
      return make_error(
          "{}: tensor '{}' data ({} bytes at offset {}) lies outside the file ({} bytes); the "
          "file may be truncated",
          path, t.name, t.nbytes, g->data_offset_ + t.offset, size);
    t.data = g->file_.data() + g->data_offset_ + t.offset;
  }
  return g;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensor* GgufFile::tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return make_error("{}: missing metadata key '{}'", path(), key);
  auto i = v->as_int();
  if (!i)
    return make_error("{}: key '{}' is {} {}, expected an integer", path(), key,
                      gguf_type_name(v->type), v->to_display());
  return *i;
}

Result<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return make_error("{}: missing metadata key '{}'", path(), key);
  auto f = v->as_float();
  if (!f)
    return make_error("{}: key '{}' is {} {}, expected a number", path(), key,
                      gguf_type_name(v->type), v->to_display());
  return *f;
}

Result<std::string_view> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return make_error("{}: missing metadata key '{}'", path(), key);
  auto s = v->as_string();
  if (!s)
    return make_error("{}: key '{}' is {}, expected a string", path(), key,
                      gguf_type_name(v->type));
  return *s;
}

Result<const GgufArray*> GgufFile::get_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return make_error("{}: missing metadata key '{}'", path(), key);
  const GgufArray* a = v->as_array();
  if (!a)
    return make_error("{}: key '{}' is {}, expected an array", path(), key,
                      gguf_type_name(v->type));
  return a;
}

}  // namespace kiln
