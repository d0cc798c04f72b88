// frontend/gguf.h — a validating reader for GGUF (v2 and v3) model files.
//
// The file is memory-mapped; metadata is parsed eagerly (strings are views into the map),
// tensor data is never copied. Every structural problem — truncation, bad magic or
// version, absurd counts, unknown value or tensor types, data out of bounds — becomes an
// Error naming the file and the key or tensor at fault.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ir/dtype.h"
#include "support/file.h"
#include "support/result.h"

namespace kiln {

// GGUF metadata value types, as stored on disk.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
std::string_view gguf_type_name(GgufType t);

struct GgufArray {
  GgufType elem = GgufType::U8;
  std::vector<int64_t> ints;             // integer and bool elements
  std::vector<double> floats;            // f32/f64 elements
  std::vector<std::string_view> strings; // string elements
  uint64_t size() const;
};

struct GgufValue {
  GgufType type = GgufType::U8;
  std::variant<int64_t, uint64_t, double, bool, std::string_view, GgufArray> v;

  // Loose typed access: integers of any width/sign convert when they fit.
  std::optional<int64_t> as_int() const;
  std::optional<double> as_float() const;  // floats, and integers converted
  std::optional<bool> as_bool() const;
  std::optional<std::string_view> as_string() const;
  const GgufArray* as_array() const;
  // One line: arrays cut after max_items items, strings after max_chars characters (with
  // "..."), newlines and quotes escaped.
  std::string to_display(size_t max_items = 8, size_t max_chars = 120) const;
};

struct GgufTensor {
  std::string_view name;
  std::vector<uint64_t> ne;  // GGML order: ne[0] is the contiguous (fastest) dimension
  DType type = DType::F32;
  uint64_t offset = 0;       // relative to the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  uint64_t elements() const;
};

// Tensors whose bytes live outside a GGUF's own bytes (a checkpoint folder's memory-mapped
// safetensors): GgufFile::parse_owned points them there instead of into its data section,
// so a checkpoint's weights are not copied into memory to be compiled.
struct GgufExternalData {
  std::map<std::string, const uint8_t*, std::less<>> tensors;
  std::shared_ptr<const void> keep_alive;  // owns the memory `tensors` point into
};

class GgufFile {
 public:
  // Opens and validates a file. `path` is used in every error message.
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path);
  // Parses bytes already in memory (used by the fuzzer and tests).
  static Result<std::unique_ptr<GgufFile>> parse(MappedFile file);
  // Parses bytes it then owns (a model translated in memory); `name` stands for the path.
  // The tensors named in `external` take their data from there (GgufWriter lays them out
  // with no bytes: add_tensor_external).
  static Result<std::unique_ptr<GgufFile>> parse_owned(std::string bytes, std::string name,
                                                       GgufExternalData external = {});

  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return file_.size(); }

  const std::vector<std::pair<std::string_view, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* tensor(std::string_view name) const;

  // Typed lookups that produce an Error naming the file and key.
  Result<int64_t> get_int(std::string_view key) const;
  Result<double> get_float(std::string_view key) const;
  Result<std::string_view> get_string(std::string_view key) const;
  Result<const GgufArray*> get_array(std::string_view key) const;

 private:
  MappedFile file_;
  static Result<std::unique_ptr<GgufFile>> parse(MappedFile file, const GgufExternalData* external);

  std::unique_ptr<const std::string> owned_;  // parse_owned's bytes, which file_ borrows
  std::shared_ptr<const void> external_;      // what external tensors point into
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string_view, GgufValue>> kv_;
  std::map<std::string_view, size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string_view, size_t> tensor_index_;
};

}  // namespace kiln
