// tests/fuzz/hf_checkpoint_fuzz.cpp — libFuzzer target for the Hugging Face checkpoint
// translation (frontend/hf_checkpoint.h): the input, cut at its first NUL byte, is a
// tokenizer.json and a tokenizer_config.json; what the translation accepts is read back as
// GGUF and built into a tokenizer that then encodes and decodes a fixed text (arbitrary
// vocabularies reach the tokenizer this way). The whole input is also tried as
// config.json. Any input must yield a value or an Error; sanitizers catch everything else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "frontend/gguf_writer.h"
#include "frontend/hf_checkpoint.h"
#include "frontend/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)hf_config_from_json(in, "fuzz");
  const size_t cut = in.find('\0');
  GgufWriter w;
  if (!hf_tokenizer_to_gguf(w, in.substr(0, cut), cut == std::string_view::npos ? "{}" : in.substr(cut + 1),
                            std::nullopt, HfConfig{}, "fuzz")
           .ok())
    return 0;
  auto g = GgufFile::parse_owned(w.bytes(), "fuzz.gguf");
  if (!g.ok()) __builtin_trap();  // the translation must write GGUF that reads back
  auto v = vocab_from_gguf(**g);
  if (!v.ok()) return 0;
  auto tok = Tokenizer::create(std::move(*v));
  if (tok.ok()) {
    const std::vector<int32_t> ids = tok->encode("Hello world <|im_end|> 123 \xE2\x96\x81x", true, true);
    size_t sink = tok->decode(ids).size();
    for (int32_t id : ids) sink += tok->piece(id).size();
    (void)sink;
  }
  return 0;
}
