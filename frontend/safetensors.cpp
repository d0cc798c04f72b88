// frontend/safetensors.cpp — safetensors parsing with every offset and shape checked.
//
// The JSON header goes through support/json.h (bounded nesting, repeated keys kept so
// that they can be rejected). The data section is
// never trusted: each tensor's byte range must lie inside it, match its shape and dtype
// exactly, and not overlap another tensor's.
#include "frontend/safetensors.h"

#include <algorithm>
#include <cstring>

#include <set>

#include "support/half.h"
#include "support/json.h"

namespace kiln {
namespace {

// No adapter or model header comes near this; larger lengths are corrupt or hostile.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr size_t kMaxDims = 8;
constexpr uint64_t kMaxElements = 1ull << 40;

struct DTypeEntry { StDType type; std::string_view name; uint32_t bytes; };
constexpr DTypeEntry kDTypes[] = {
    {StDType::BOOL, "BOOL", 1},       {StDType::U8, "U8", 1},   {StDType::I8, "I8", 1},
    {StDType::F8_E4M3, "F8_E4M3", 1}, {StDType::F8_E5M2, "F8_E5M2", 1},
    {StDType::I16, "I16", 2},         {StDType::U16, "U16", 2}, {StDType::F16, "F16", 2},
    {StDType::BF16, "BF16", 2},       {StDType::I32, "I32", 4}, {StDType::U32, "U32", 4},
    {StDType::F32, "F32", 4},         {StDType::I64, "I64", 8}, {StDType::U64, "U64", 8},
    {StDType::F64, "F64", 8},
};

const DTypeEntry* find_dtype(std::string_view name) {
  for (const auto& e : kDTypes)
    if (e.name == name) return &e;
  return nullptr;
}

}  // namespace

std::string_view st_dtype_name(StDType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e.name;
  return "?";
}

Status check_json_nesting(std::string_view text, const std::string& what, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        return make_error("{}: JSON nested deeper than {} levels", what, max_depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return {};
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  KILN_ASSIGN(MappedFile f, MappedFile::open(path));
  return parse(std::move(f));
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::parse(MappedFile file) {
  const std::string& path = file.path();
  const uint8_t* p = file.data();
  const uint64_t size = file.size();
  if (size < 8) return make_error("{}: not a safetensors file: {} bytes, shorter than the 8-byte header length", path, size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
  if (n > kMaxHeaderBytes) return make_error("{}: safetensors header length {} is absurd (limit {})", path, n, kMaxHeaderBytes);
  if (n > size - 8) return make_error("{}: safetensors header length {} runs past the end of the file ({} bytes)", path, n, size);
  std::string_view header(reinterpret_cast<const char*>(p + 8), n);
  // Trailing spaces are allowed by the format (writers pad the header for alignment).
  while (!header.empty() && header.back() == ' ') header.remove_suffix(1);
  auto parsed = Json::parse(header, 64);
  if (!parsed) return make_error("{}: safetensors header is not valid JSON: {}", path, parsed.error().message);
  const std::vector<Json::Member>* root = parsed->as_object();
  if (!root) return make_error("{}: safetensors header is not a JSON object", path);
  {
    std::set<std::string_view> seen;
    for (const auto& [key, value] : *root)
      if (!seen.insert(key).second)
        return make_error("{}: tensor '{}' appears twice in the safetensors header", path, key);
  }

  auto out = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  const uint64_t data_start = 8 + n;
  const uint64_t data_size = size - data_start;
  for (const auto& [key, value] : *root) {
    const std::string& name = key;
    if (name == "__metadata__") {
      const std::vector<Json::Member>* md = value.as_object();
      if (!md) return make_error("{}: '__metadata__' is not an object", path);
      for (const auto& [mk, mv] : *md) {
        const std::string* s = mv.as_string();
        if (!s) return make_error("{}: '__metadata__' value for '{}' is not a string", path, mk);
        out->metadata_[mk] = *s;
      }
      continue;
    }
    auto bad = [&](std::string_view why) {
      return make_error("{}: tensor '{}': {}", path, name, why);
    };
    if (!value.as_object()) return bad("entry is not an object");
    StTensor st;
    st.name = name;
    const Json* dt = value.get("dtype");
    const std::string* dtype = dt ? dt->as_string() : nullptr;
    if (!dtype) return bad("missing string 'dtype'");
    const DTypeEntry* de = find_dtype(*dtype);
    if (!de) return bad(fmt::format("unknown dtype '{}'", *dtype));
    st.dtype = de->type;
    const Json* sh = value.get("shape");
    const std::vector<Json>* shape = sh ? sh->as_array() : nullptr;
    if (!shape) return bad("missing array 'shape'");
    if (shape->size() > kMaxDims) return bad(fmt::format("{} dimensions (at most {})", shape->size(), kMaxDims));
    uint64_t elements = 1;
    for (const auto& d : *shape) {
      auto v = d.as_u64();
      if (!v) return bad("shape holds a value that is not a non-negative integer");
      if (*v > kMaxElements || (*v != 0 && elements > kMaxElements / *v))
        return bad(fmt::format("shape has more than {} elements", kMaxElements));
      elements *= *v;
      st.shape.push_back((int64_t)*v);
    }
    st.elements = elements;
    const Json* of = value.get("data_offsets");
    const std::vector<Json>* offs = of ? of->as_array() : nullptr;
    if (!offs || offs->size() != 2) return bad("'data_offsets' is not an array of two integers");
    auto b = (*offs)[0].as_u64(), e = (*offs)[1].as_u64();
    if (!b || !e) return bad("'data_offsets' holds a value that is not a non-negative integer");
    if (*b > *e) return bad(fmt::format("data_offsets [{}, {}] end before they begin", *b, *e));
    if (*e > data_size)
      return bad(fmt::format("data_offsets [{}, {}] run past the data section ({} bytes)", *b, *e, data_size));
    uint64_t want = elements * de->bytes;  // elements <= 2^40, bytes <= 8: no overflow
    if (*e - *b != want)
      return bad(fmt::format("data_offsets [{}, {}] hold {} bytes, but shape and dtype {} need {}", *b, *e,
                             *e - *b, de->name, want));
    st.begin = *b;
    st.end = *e;
    st.data = p + data_start + *b;
    out->tensors_.push_back(std::move(st));
  }
  // No two tensors may share bytes (empty tensors take none).
  std::vector<const StTensor*> by_offset;
  for (const auto& t : out->tensors_)
    if (t.end > t.begin) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const StTensor* a, const StTensor* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      return make_error("{}: tensor '{}' overlaps tensor '{}' in the data section", path, by_offset[i]->name,
                        by_offset[i - 1]->name);
  std::sort(out->tensors_.begin(), out->tensors_.end(),
            [](const StTensor& a, const StTensor& b) { return a.name < b.name; });
  out->file_ = std::move(file);
  return out;
}

const StTensor* SafetensorsFile::tensor(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const StTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

Result<std::vector<float>> SafetensorsFile::to_f32(const StTensor& t) const {
  std::vector<float> v;
  switch (t.dtype) {
    case StDType::F32:
      v.resize(t.elements);
      if (t.elements) std::memcpy(v.data(), t.data, t.elements * 4);
      return v;
    case StDType::F16:
    case StDType::BF16: {
      v.resize(t.elements);
      for (uint64_t i = 0; i < t.elements; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        v[i] = t.dtype == StDType::F16 ? fp16_to_f32(h) : bf16_to_f32(h);
      }
      return v;
    }
    case StDType::BOOL: case StDType::U8: case StDType::I8: case StDType::F8_E4M3:
    case StDType::F8_E5M2: case StDType::I16: case StDType::U16: case StDType::I32:
    case StDType::U32: case StDType::I64: case StDType::U64: case StDType::F64:
      break;
  }
  return make_error("{}: tensor '{}': dtype {} is not supported (expected F32, F16 or BF16)", path(), t.name,
                    st_dtype_name(t.dtype));
}

}  // namespace kiln
