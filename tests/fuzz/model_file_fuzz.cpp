// tests/fuzz/model_file_fuzz.cpp — libFuzzer target for the model.kiln reader.
//
// The first byte picks a mode:
//   even: the rest is a whole file (header checks, sizes, checksum);
//   odd:  the rest is a flatbuffer body; the target writes a valid header for it (with the
//         right size and checksum), so that mutations reach the flatbuffers verifier and
//         the contents checks instead of dying at the checksum.
// A file that loads is then read through every view, and its tokenizer is built and used
// as kiln_model_load would. Seeds: tests/fuzz/corpus/model_file/ (runtime_test.cpp,
// ModelFileSeeds.Write).
#include <cstdint>
#include <cstring>
#include <vector>

#include "frontend/chat_template.h"
#include "frontend/tokenizer.h"
#include "runtime/hash64.h"
#include "runtime/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln;
  if (size < 1) return 0;
  const bool synth = data[0] & 1;
  ++data;
  --size;
  // A 64-byte aligned copy, as a mapping would be.
  const size_t total = synth ? size + kModelFileHeaderSize : size;
  std::vector<uint8_t> buf(total + 64);
  uint8_t* p = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
  if (synth) {
    ModelFileHeader h{};
    std::memcpy(h.magic, kModelFileMagic, sizeof h.magic);
    h.format_version = kModelFileVersion;
    h.header_size = kModelFileHeaderSize;
    h.flatbuffer_size = size;
    h.checksum = xxh64(data, size);
    std::memcpy(p, &h, sizeof h);
    if (size) std::memcpy(p + kModelFileHeaderSize, data, size);
  } else if (size) {
    std::memcpy(p, data, size);
  }

  auto f = ModelFile::parse(MappedFile::borrow(p, total, "fuzz.kiln"));
  if (!f.ok()) return 0;
  volatile uint64_t sink = f->model_hash() + f->format_version();
  sink = sink + f->name().size() + f->arch().size() + f->profile().size() + f->target().size();
  ModelHparams hp = f->hparams();
  ModelLimits lim = f->limits();
  sink = sink + static_cast<uint64_t>(hp.n_vocab) + static_cast<uint64_t>(lim.max_rows);  // unsigned: any values
  for (const TensorRecord& t : f->tensors()) {
    const auto w = f->weights();
    if (t.nbytes) sink = sink + w[t.offset] + w[t.offset + t.nbytes - 1];
    sink = sink + t.shape.size() + t.name.size();
  }
  auto tmpl = detect_chat_template(f->chat_template());
  if (tmpl.ok()) {
    ChatMessage m[2] = {{"system", "s"}, {"user", "hi"}};
    sink = sink + render_chat(*tmpl, m, true).size();
  }
  auto tok = Tokenizer::create(f->vocab());
  if (tok.ok()) {
    const std::vector<int32_t> ids = tok->encode("Hello world <|im_end|> 123 \xE2\x96\x81x", true, true);
    sink = sink + tok->decode(ids).size() + ids.size();
    for (int32_t id : ids) sink = sink + tok->piece(id).size() + tok->is_eog(id);
  }
  (void)sink;
  return 0;
}
