// frontend/adapter.h — LoRA adapters for a LLaMA base, read into one format-independent form.
//
// Two formats load into the same LoraAdapter: a PEFT folder (adapter_config.json +
// adapter_model.safetensors) and a llama.cpp GGUF LoRA file (general.type = "adapter").
// Everything becomes f32 in the GGUF base's conventions: each target names its GGUF base
// tensor, A is [rank, in] and B is [out, rank] row-major, and a PEFT adapter's q/k B rows
// are permuted the way the GGUF converter permuted the base q/k weights, so that for every
// target   W_gguf + scale * B * A   is the adapted weight. The adapter is validated against
// the base (layers, shapes, rank limit); every error names the adapter file and tensor.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <functional>
#include <utility>

#include "frontend/gguf.h"
#include "frontend/safetensors.h"
#include "support/result.h"

namespace kiln {

enum class LoraFormat : uint8_t { Peft, Gguf };

struct LoraTarget {
  std::string base_tensor;  // GGUF name, e.g. "blk.3.attn_q.weight"
  int64_t layer = 0;
  int module = 0;           // index into lora_names::kModules
  int64_t rank = 0;
  int64_t in = 0, out = 0;  // the base tensor is [out, in]
  std::vector<float> a;     // [rank, in] row-major
  std::vector<float> b;     // [out, rank] row-major (q/k rows in GGUF order)
};

struct LoraAdapter {
  std::string path;        // as given; used in messages
  std::string name;        // folder or file name without extension
  LoraFormat format = LoraFormat::Peft;
  std::string base_model;  // PEFT base_model_name_or_path, if given
  float alpha = 0.0f;
  int64_t rank = 0;        // PEFT r; GGUF: the largest target rank
  bool rslora = false;
  // The one factor for every target: alpha/rank, or alpha/sqrt(rank) with rslora. (GGUF
  // files with mixed ranks: the ratio of each target's own llama.cpp scale is folded into
  // its B. A GGUF alpha of 0 means scale 1, as in llama.cpp.)
  float scale = 0.0f;
  std::vector<LoraTarget> targets;  // sorted by (layer, module)
};

struct LlamaConfig;  // frontend/llama.h

// What the readers check an adapter against: the base's architecture, layer and head
// counts, and the [out, in] shape of each target matrix. The compiler builds it from the
// base GGUF (lora_base_of); the runtime from the compiled model's LoRA descriptor, where a
// target may also be missing because it was not compiled (the error says why).
struct LoraBase {
  std::string path;  // names the base in messages
  std::string arch;
  int64_t n_layer = 0, n_head = 0, n_head_kv = 0;
  // {in, out} of the base matrix of (layer, module index into lora_names::kModules), or
  // an error message saying why the adapter cannot target it.
  std::function<Result<std::pair<int64_t, int64_t>>(int64_t layer, int module)> shape;
};

// The base as the GGUF model file describes it (frontend/adapter_base.cpp).
LoraBase lora_base_of(const LlamaConfig& base, const GgufFile& base_file);

struct LoraOptions {
  int64_t max_rank = 16;  // the compiled maximum rank R; larger adapters are rejected
};

// Loads an adapter from a PEFT folder, a GGUF LoRA file, or an adapter_model.safetensors
// file (its adapter_config.json is read from the same folder).
Result<LoraAdapter> load_lora_adapter(const std::string& path, const LlamaConfig& base,
                                      const GgufFile& base_file, const LoraOptions& opts = {});

// The same against any LoraBase (the runtime's compiled descriptor).
Result<LoraAdapter> load_lora_adapter(const std::string& path, const LoraBase& base, const LoraOptions& opts = {});
Result<LoraAdapter> lora_from_gguf(const GgufFile& adapter, const LoraBase& base, const LoraOptions& opts = {});
Result<LoraAdapter> lora_from_peft(std::string_view config_json, const std::string& config_path,
                                   const SafetensorsFile& weights, const LoraBase& base, const LoraOptions& opts = {});

// The same from parsed inputs (tests, fuzzers). `config_path` names the JSON in messages.
Result<LoraAdapter> lora_from_gguf(const GgufFile& adapter, const LlamaConfig& base,
                                   const GgufFile& base_file, const LoraOptions& opts = {});
Result<LoraAdapter> lora_from_peft(std::string_view config_json, const std::string& config_path,
                                   const SafetensorsFile& weights, const LlamaConfig& base,
                                   const GgufFile& base_file, const LoraOptions& opts = {});

// The modules `adapters` adapt, as kiln compile --lora-targets spells them ("q,k,v,o"), in
// lora_names::kModules order: the targets of a build for just these adapters.
std::string lora_targets_of(const std::vector<LoraAdapter>& adapters);

// Reorders the rows of a row-major [rows, cols] matrix from Hugging Face order to GGUF
// order for rope: within each of `n_head` groups of rows, row t*half + j moves to
// j*2 + t (half = rows / n_head / 2), as llama.cpp's converter does for q_proj
// (n_head) and k_proj (n_head_kv). rows must be a multiple of 2 * n_head.
void rope_permute_rows(std::vector<float>& m, int64_t rows, int64_t cols, int64_t n_head);
// The same from src into dst on raw rows of row_bytes bytes each (a checkpoint's tensor
// in its own dtype); `inverse` moves GGUF order back to Hugging Face's.
void rope_permute_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes, int64_t n_head,
                       bool inverse = false);

}  // namespace kiln
