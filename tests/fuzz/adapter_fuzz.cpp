// tests/fuzz/adapter_fuzz.cpp — libFuzzer target for the LoRA adapter readers: each input
// is tried as a safetensors file (parsed, every tensor converted, then loaded as a PEFT
// adapter), as a GGUF LoRA file, and as adapter_config.json, all against a tiny LLaMA base.
// Any input must yield a value or an Error; sanitizers catch everything else.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "frontend/adapter.h"
#include "frontend/gguf.h"
#include "frontend/safetensors.h"
#include "support/json.h"
#include "tests/unit/tiny_model.h"

namespace {

struct Base {
  std::string bytes = kiln::testing::tiny_llama_gguf(
      {.vocab = 32, .embd = 32, .layers = 2, .heads = 2, .kv_heads = 1, .ff = 32, .matrix_type = kiln::DType::F16});
  std::unique_ptr<kiln::GgufFile> file =
      std::move(kiln::GgufFile::parse(kiln::MappedFile::borrow(bytes.data(), bytes.size(), "base.gguf"))).value();
  kiln::LlamaConfig cfg = kiln::read_llama_config(*file).value();
};

// A valid one-target PEFT safetensors file (q_proj of layer 0, rank 2), for the config path.
std::string valid_safetensors() {
  std::string header =
      R"({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[2,32],"data_offsets":[0,256]},)"
      R"("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":{"dtype":"F32","shape":[32,2],"data_offsets":[256,512]}})";
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = (char)((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(512, '\0');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln;
  static const Base base;
  static const std::string st_bytes = valid_safetensors();
  static const auto st_valid =
      std::move(SafetensorsFile::parse(MappedFile::borrow(st_bytes.data(), st_bytes.size(), "valid.safetensors"))).value();
  static constexpr std::string_view kConfig =
      R"({"r":2,"lora_alpha":4,"target_modules":["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]})";
  LoraOptions opts;
  opts.max_rank = 8;

  if (auto st = SafetensorsFile::parse(MappedFile::borrow(data, size, "fuzz.safetensors")); st.ok()) {
    for (const StTensor& t : (*st)->tensors()) (void)(*st)->to_f32(t);
    (void)lora_from_peft(kConfig, "fuzz/adapter_config.json", **st, base.cfg, *base.file, opts);
  }
  if (auto g = GgufFile::parse(MappedFile::borrow(data, size, "fuzz.gguf")); g.ok())
    (void)lora_from_gguf(**g, base.cfg, *base.file, opts);
  // The JSON reader itself (support/json.h), then the input as adapter_config.json.
  if (auto j = Json::parse(std::string_view(reinterpret_cast<const char*>(data), size)); j.ok()) {
    (void)j->as_int();
    (void)j->as_u64();
    (void)j->get("r");
  }
  (void)lora_from_peft(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/adapter_config.json",
                       *st_valid, base.cfg, *base.file, opts);
  return 0;
}
