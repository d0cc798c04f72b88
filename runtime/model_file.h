// runtime/model_file.h — model.kiln: its byte layout and the reader (mmap + validation).
//
// A model.kiln file is
//
//   offset  size  field
//        0     8  magic "KILNMODL"
//        8     4  u32 format version (kModelFileVersion)
//       12     4  u32 header size (64)
//       16     8  u64 flatbuffer size N; the file is exactly 64 + N bytes
//       24     8  u64 checksum: XXH64 (seed 0, runtime/hash64.h) of the N flatbuffer bytes
//       32    32  reserved, zero
//       64     N  flatbuffer, root kiln.fb.Model (runtime/schema/model.fbs)
//
// all little-endian. The weight blob inside the flatbuffer starts 64-byte aligned relative
// to the file, hence in memory when the file is mapped. The reader refuses anything else
// with an Error that names the file and what was expected, and never crashes on any bytes
// (tests/fuzz/model_file_fuzz.cpp). The writer is runtime/model_file_writer.h, in a
// separate library so that the runtime does not carry it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/tokenizer.h"
#include "support/file.h"
#include "support/result.h"

namespace kiln {

namespace fb {
struct Model;
}

inline constexpr char kModelFileMagic[8] = {'K', 'I', 'L', 'N', 'M', 'O', 'D', 'L'};
inline constexpr uint32_t kModelFileVersion = 1;
inline constexpr uint32_t kModelFileHeaderSize = 64;
inline constexpr size_t kModelWeightsAlign = 64;
// flatbuffers 2.x addresses at most 2 GiB - 1 bytes (FLATBUFFERS_MAX_BUFFER_SIZE).
inline constexpr uint64_t kModelFileMaxFlatbuffer = (1ull << 31) - 1;

// The header as it lies on disk (little-endian hosts read it in place).
struct ModelFileHeader {
  char magic[8];
  uint32_t format_version;
  uint32_t header_size;
  uint64_t flatbuffer_size;
  uint64_t checksum;
  uint8_t reserved[32];
};
static_assert(sizeof(ModelFileHeader) == kModelFileHeaderSize);

struct ModelHparams {
  int64_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0,
          n_ff = 0, n_ctx_train = 0;
  float rope_theta = 0.0f, rms_eps = 0.0f;
  bool operator==(const ModelHparams&) const = default;
};

struct ModelLimits {
  int64_t max_rows = 0, max_streams = 0, max_context = 0;
  bool operator==(const ModelLimits&) const = default;
};

// One weight tensor in the blob (for inspection; compiled code uses constant offsets).
struct TensorRecord {
  std::string name;
  uint32_t dtype = 0;          // GGML type id (ir/dtypes.def)
  std::vector<int64_t> shape;  // ne0 first
  uint64_t offset = 0;         // into the weight blob
  uint64_t nbytes = 0;
  std::string layout;          // "" = plain GGML blocks
  bool operator==(const TensorRecord&) const = default;
};

// Why a file was refused, for callers that map failures to status codes.
enum class ModelFileErrc { kNone, kIo, kFormat, kVersion, kChecksum };

class ModelFile {
 public:
  ModelFile() = default;
  ModelFile(ModelFile&&) noexcept = default;
  ModelFile& operator=(ModelFile&&) noexcept = default;

  // Maps `path` and validates it: magic, version, sizes, checksum, the flatbuffers
  // verifier, then the contents (format version agrees, tensor records inside the blob,
  // blob alignment). `errc`, when given, receives the kind of failure.
  static Result<ModelFile> open(const std::string& path, ModelFileErrc* errc = nullptr);
  // The same over bytes already mapped or borrowed (MappedFile::borrow: tests, fuzzers).
  static Result<ModelFile> parse(MappedFile file, ModelFileErrc* errc = nullptr);

  const std::string& path() const { return file_.path(); }
  const ModelFileHeader& header() const { return header_; }
  uint32_t format_version() const;
  uint64_t model_hash() const;
  std::string_view name() const;
  std::string_view arch() const;
  std::string_view profile() const;
  std::string_view target() const;
  ModelHparams hparams() const;
  ModelLimits limits() const;
  // The tokenizer as a VocabData (a copy; Tokenizer::create validates it).
  VocabData vocab() const;
  std::string_view chat_template() const;
  size_t n_tensors() const;
  TensorRecord tensor(size_t i) const;  // i < n_tensors()
  std::vector<TensorRecord> tensors() const;
  // The weight blob, 64-byte aligned (empty span if the model has no weights).
  std::span<const uint8_t> weights() const;
  const fb::Model* root() const { return root_; }

 private:
  MappedFile file_;
  const fb::Model* root_ = nullptr;
  ModelFileHeader header_{};
};

}  // namespace kiln
