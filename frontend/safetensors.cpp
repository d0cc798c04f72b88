// frontend/safetensors.cpp — safetensors parsing with every offset and shape checked.
//
// The JSON header goes through llvm::json after a nesting-depth pre-scan (the LLVM parser
// recurses, so hostile nesting would otherwise exhaust the stack). The data section is
// never trusted: each tensor's byte range must lie inside it, match its shape and dtype
// exactly, and not overlap another tensor's.
#include "frontend/safetensors.h"

#include <algorithm>
#include <cstring>

#include <llvm/Support/JSON.h>

#include "support/half.h"

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

// A non-negative integer from JSON (integers, or floats with an exact integer value).
std::optional<uint64_t> as_u64(const llvm::json::Value& v) {
  if (auto i = v.getAsUINT64()) return *i;
  if (auto i = v.getAsInteger()) return *i >= 0 ? std::optional<uint64_t>((uint64_t)*i) : std::nullopt;
  return std::nullopt;
}

// The raw (still escaped) keys of the top-level JSON object, for finding repeated names:
// llvm::json keeps only one value per key. Call on text that parsed as an object.
std::vector<std::string_view> top_level_keys(std::string_view text) {
  std::vector<std::string_view> keys;
  int depth = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '"') {
      size_t start = ++i;
      while (i < text.size() && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
      if (depth != 1) continue;
      size_t j = i + 1;
      while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' || text[j] == '\r')) ++j;
      if (j < text.size() && text[j] == ':') keys.push_back(text.substr(start, std::min(i, text.size()) - start));
    } else if (c == '[' || c == '{') {
      ++depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return keys;
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
  KILN_TRY(check_json_nesting(header, path + ": safetensors header", 64));
  auto parsed = llvm::json::parse(llvm::StringRef(header.data(), header.size()));
  if (!parsed) return make_error("{}: safetensors header is not valid JSON: {}", path, llvm::toString(parsed.takeError()));
  const llvm::json::Object* root = parsed->getAsObject();
  if (!root) return make_error("{}: safetensors header is not a JSON object", path);

  if (auto keys = top_level_keys(header); keys.size() != root->size()) {
    std::sort(keys.begin(), keys.end());
    auto dup = std::adjacent_find(keys.begin(), keys.end());
    return make_error("{}: tensor '{}' appears twice in the safetensors header", path,
                      dup != keys.end() ? *dup : std::string_view("?"));
  }

  auto out = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  const uint64_t data_start = 8 + n;
  const uint64_t data_size = size - data_start;
  for (const auto& [key, value] : *root) {
    std::string name = key.str();
    if (name == "__metadata__") {
      const llvm::json::Object* md = value.getAsObject();
      if (!md) return make_error("{}: '__metadata__' is not an object", path);
      for (const auto& [mk, mv] : *md) {
        auto s = mv.getAsString();
        if (!s) return make_error("{}: '__metadata__' value for '{}' is not a string", path, mk.str());
        out->metadata_[mk.str()] = s->str();
      }
      continue;
    }
    auto bad = [&](std::string_view why) {
      return make_error("{}: tensor '{}': {}", path, name, why);
    };
    const llvm::json::Object* t = value.getAsObject();
    if (!t) return bad("entry is not an object");
    StTensor st;
    st.name = name;
    auto dtype = t->getString("dtype");
    if (!dtype) return bad("missing string 'dtype'");
    const DTypeEntry* de = find_dtype(std::string_view(dtype->data(), dtype->size()));
    if (!de) return bad(fmt::format("unknown dtype '{}'", dtype->str()));
    st.dtype = de->type;
    const llvm::json::Array* shape = t->getArray("shape");
    if (!shape) return bad("missing array 'shape'");
    if (shape->size() > kMaxDims) return bad(fmt::format("{} dimensions (at most {})", shape->size(), kMaxDims));
    uint64_t elements = 1;
    for (const auto& d : *shape) {
      auto v = as_u64(d);
      if (!v) return bad("shape holds a value that is not a non-negative integer");
      if (*v > kMaxElements || (*v != 0 && elements > kMaxElements / *v))
        return bad(fmt::format("shape has more than {} elements", kMaxElements));
      elements *= *v;
      st.shape.push_back((int64_t)*v);
    }
    st.elements = elements;
    const llvm::json::Array* offs = t->getArray("data_offsets");
    if (!offs || offs->size() != 2) return bad("'data_offsets' is not an array of two integers");
    auto b = as_u64((*offs)[0]), e = as_u64((*offs)[1]);
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
