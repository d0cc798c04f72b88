// frontend/lora_names.h — the LoRA target modules of LLaMA, in one table.
//
// Each row ties a projection's Hugging Face / PEFT module name to its GGUF tensor name
// (from gguf_names.h) and says whether the GGUF converter permuted its output rows for
// rope (q and k: see rope_permute_rows in adapter.h). The adapter readers, and anything
// else that maps between the two namings, read this table only.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

#include "frontend/gguf_names.h"

namespace kiln::lora_names {

enum class RopePermute : uint8_t {
  None,
  Heads,    // rows grouped by the n_head query heads
  KvHeads,  // rows grouped by the n_head_kv key heads
};

struct LoraModule {
  std::string_view name;    // kiln's short name (kiln compile --lora-targets): "q"
  std::string_view peft;    // PEFT target_modules entry: "q_proj"
  std::string_view hf;      // module path inside a decoder layer: "self_attn.q_proj"
  std::string_view gguf;    // GGUF tensor pattern, "{}" is the layer: "blk.{}.attn_q.weight"
  RopePermute permute;
};

inline constexpr LoraModule kModules[] = {
    {"q", "q_proj", "self_attn.q_proj", gguf_names::kAttnQ, RopePermute::Heads},
    {"k", "k_proj", "self_attn.k_proj", gguf_names::kAttnK, RopePermute::KvHeads},
    {"v", "v_proj", "self_attn.v_proj", gguf_names::kAttnV, RopePermute::None},
    {"o", "o_proj", "self_attn.o_proj", gguf_names::kAttnOut, RopePermute::None},
    {"gate", "gate_proj", "mlp.gate_proj", gguf_names::kFfnGate, RopePermute::None},
    {"up", "up_proj", "mlp.up_proj", gguf_names::kFfnUp, RopePermute::None},
    {"down", "down_proj", "mlp.down_proj", gguf_names::kFfnDown, RopePermute::None},
};

inline constexpr int kNumModules = (int)(sizeof(kModules) / sizeof(kModules[0]));

// The module index of a short name ("q", ..., "down") or a PEFT name ("q_proj"); -1 if none.
inline int module_index(std::string_view name) {
  for (int i = 0; i < kNumModules; ++i)
    if (kModules[i].name == name || kModules[i].peft == name) return i;
  return -1;
}

// "blk.<layer>.<module>.weight" of a target module -> {layer, module index}.
inline std::optional<std::pair<int64_t, int>> parse_target(std::string_view tensor) {
  for (int i = 0; i < kNumModules; ++i) {
    std::string_view p = kModules[i].gguf;
    size_t at = p.find("{}");
    std::string_view pre = p.substr(0, at), post = p.substr(at + 2);
    if (tensor.size() <= pre.size() + post.size() || tensor.substr(0, pre.size()) != pre ||
        tensor.substr(tensor.size() - post.size()) != post)
      continue;
    std::string_view digits = tensor.substr(pre.size(), tensor.size() - pre.size() - post.size());
    if (digits.size() > 9) continue;
    int64_t layer = 0;
    bool ok = true;
    for (char c : digits) {
      if (c < '0' || c > '9') { ok = false; break; }
      layer = layer * 10 + (c - '0');
    }
    if (ok) return std::pair<int64_t, int>{layer, i};
  }
  return std::nullopt;
}

// PEFT tensor names: "{kPeftPrefix}{layer}.{hf}{kPeftA|kPeftB}".
inline constexpr std::string_view kPeftPrefix = "base_model.model.model.layers.";
inline constexpr std::string_view kPeftA = ".lora_A.weight";
inline constexpr std::string_view kPeftB = ".lora_B.weight";
// PEFT target_modules shorthand for every linear layer but the LM head.
inline constexpr std::string_view kPeftAllLinear = "all-linear";

// GGUF LoRA tensor names: the base tensor's name plus one of these suffixes.
inline constexpr std::string_view kGgufA = ".lora_a";
inline constexpr std::string_view kGgufB = ".lora_b";
// Norm tensors that mergekit-extract-lora adds; llama.cpp ignores them, and so does kiln.
inline constexpr std::string_view kGgufNormSuffix = "_norm.weight";

// GGUF LoRA metadata keys (llama.cpp's convert_lora_to_gguf.py).
inline constexpr std::string_view kGeneralType = "general.type";
inline constexpr std::string_view kAdapterType = "adapter.type";
inline constexpr std::string_view kAdapterLoraAlpha = "adapter.lora.alpha";

// PEFT adapter folder files and adapter_config.json keys.
inline constexpr std::string_view kPeftConfigFile = "adapter_config.json";
inline constexpr std::string_view kPeftWeightsFile = "adapter_model.safetensors";
inline constexpr std::string_view kPeftWeightsBinFile = "adapter_model.bin";
inline constexpr std::string_view kCfgRank = "r";
inline constexpr std::string_view kCfgAlpha = "lora_alpha";
inline constexpr std::string_view kCfgTargetModules = "target_modules";
inline constexpr std::string_view kCfgRsLora = "use_rslora";
inline constexpr std::string_view kCfgFanInFanOut = "fan_in_fan_out";
inline constexpr std::string_view kCfgBaseModel = "base_model_name_or_path";
inline constexpr std::string_view kCfgPeftType = "peft_type";
inline constexpr std::string_view kCfgUseDora = "use_dora";
inline constexpr std::string_view kCfgBias = "bias";
inline constexpr std::string_view kCfgModulesToSave = "modules_to_save";
inline constexpr std::string_view kCfgRankPattern = "rank_pattern";
inline constexpr std::string_view kCfgAlphaPattern = "alpha_pattern";

}  // namespace kiln::lora_names
