// frontend/adapter_base.cpp — the adapter readers against a base GGUF model file.
//
// Kept apart from adapter.cpp so that the runtime, which has no base GGUF (only the
// compiled model's LoRA descriptor), can compile the readers without the LLaMA lowering.
#include "frontend/adapter.h"
#include "frontend/gguf_names.h"
#include "frontend/lora_names.h"
#include "frontend/llama.h"

namespace kiln {

LoraBase lora_base_of(const LlamaConfig& cfg, const GgufFile& file) {
  LoraBase b;
  b.path = file.path();
  b.arch = cfg.arch;
  b.n_layer = cfg.n_layer;
  b.n_head = cfg.n_head;
  b.n_head_kv = cfg.n_head_kv;
  const GgufFile* f = &file;
  b.shape = [f](int64_t layer, int module) -> Result<std::pair<int64_t, int64_t>> {
    std::string name = gguf_names::layer_tensor(lora_names::kModules[module].gguf, layer);
    const GgufTensor* w = f->tensor(name);
    if (!w || w->ne.size() != 2)
      return make_error("the base model {} has no matrix '{}' (adapter made for another base?)", f->path(), name);
    return std::pair<int64_t, int64_t>{(int64_t)w->ne[0], (int64_t)w->ne[1]};
  };
  return b;
}

Result<LoraAdapter> load_lora_adapter(const std::string& path, const LlamaConfig& base, const GgufFile& base_file,
                                      const LoraOptions& opts) {
  return load_lora_adapter(path, lora_base_of(base, base_file), opts);
}

Result<LoraAdapter> lora_from_gguf(const GgufFile& adapter, const LlamaConfig& base, const GgufFile& base_file,
                                   const LoraOptions& opts) {
  return lora_from_gguf(adapter, lora_base_of(base, base_file), opts);
}

Result<LoraAdapter> lora_from_peft(std::string_view config_json, const std::string& config_path,
                                   const SafetensorsFile& weights, const LlamaConfig& base, const GgufFile& base_file,
                                   const LoraOptions& opts) {
  return lora_from_peft(config_json, config_path, weights, lora_base_of(base, base_file), opts);
}

}  // namespace kiln
