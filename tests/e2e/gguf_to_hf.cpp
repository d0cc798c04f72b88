// tests/e2e/gguf_to_hf.cpp — writes a GGUF LLaMA as a Hugging Face checkpoint folder
// (tests/hf_export.h), for tests/e2e/hf_checkpoint.sh.
// usage: kiln_gguf_to_hf MODEL.gguf DIR [--shard]
#include <cstdio>
#include <cstring>

#include "frontend/gguf.h"
#include "tests/hf_export.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: kiln_gguf_to_hf MODEL.gguf DIR [--shard]\n");
    return 2;
  }
  auto f = kiln::GgufFile::open(argv[1]);
  if (!f.ok()) { std::fprintf(stderr, "kiln_gguf_to_hf: %s\n", f.error().message.c_str()); return 1; }
  kiln::testing::HfExportOptions o;
  o.shard = argc > 3 && !std::strcmp(argv[3], "--shard");
  if (auto s = kiln::testing::export_hf(**f, argv[2], o); !s.ok()) {
    std::fprintf(stderr, "kiln_gguf_to_hf: %s\n", s.error().message.c_str());
    return 1;
  }
  return 0;
}
