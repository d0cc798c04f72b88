// tests/fuzz/gguf_fuzz.cpp — libFuzzer target for the GGUF reader and everything that
// reads a parsed file: hyperparameters, LLaMA lowering + verifier, tokenizer metadata.
// Any input must yield a value or an Error; sanitizers catch everything else.
#include <cstddef>
#include <cstdint>

#include "frontend/gguf.h"
#include "frontend/llama.h"
#include "frontend/tokenizer.h"
#include "ir/verifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln;
  auto f = GgufFile::parse(MappedFile::borrow(data, size, "fuzz.gguf"));
  if (!f.ok()) return 0;
  std::shared_ptr<const GgufFile> file(std::move(f).value());
  for (auto& [k, v] : file->metadata()) (void)v.to_display();
  if (auto vocab = vocab_from_gguf(*file); vocab.ok()) {
    auto tok = Tokenizer::create(std::move(vocab).value());
    if (tok.ok()) (void)tok->encode("Hello world 123 <|im_start|>", true, true);
  }
  auto cfg = read_llama_config(*file);
  if (!cfg.ok()) return 0;
  LlamaBuildOptions opts;
  opts.max_context = 16;
  auto g = build_llama_graph(file, *cfg, opts);
  if (g.ok()) (void)verify(*g);
  return 0;
}
