// frontend/gguf_names.h — GGUF metadata keys and LLaMA tensor names, in one table.
//
// Architecture-specific keys are written "{arch}.xxx" in GGUF; kiln fills in the
// architecture read from general.architecture. Tensor names with a layer take "{}".
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace kiln::gguf_names {

// General keys.
inline constexpr std::string_view kArchitecture = "general.architecture";
inline constexpr std::string_view kName = "general.name";
inline constexpr std::string_view kAlignment = "general.alignment";

// Per-architecture hyperparameters (suffixes after "{arch}.").
inline constexpr std::string_view kContextLength = "context_length";
inline constexpr std::string_view kEmbeddingLength = "embedding_length";
inline constexpr std::string_view kBlockCount = "block_count";
inline constexpr std::string_view kFeedForwardLength = "feed_forward_length";
inline constexpr std::string_view kHeadCount = "attention.head_count";
inline constexpr std::string_view kHeadCountKv = "attention.head_count_kv";
inline constexpr std::string_view kRmsEps = "attention.layer_norm_rms_epsilon";
inline constexpr std::string_view kKeyLength = "attention.key_length";
inline constexpr std::string_view kRopeFreqBase = "rope.freq_base";
inline constexpr std::string_view kRopeDimensionCount = "rope.dimension_count";
inline constexpr std::string_view kRopeScalingType = "rope.scaling.type";
inline constexpr std::string_view kVocabSize = "vocab_size";

inline std::string arch_key(std::string_view arch, std::string_view suffix) {
  return fmt::format("{}.{}", arch, suffix);
}

// Tokenizer keys.
inline constexpr std::string_view kTokModel = "tokenizer.ggml.model";
inline constexpr std::string_view kTokTokens = "tokenizer.ggml.tokens";
inline constexpr std::string_view kChatTemplate = "tokenizer.chat_template";

// Tensors of the LLaMA graph.
inline constexpr std::string_view kTokenEmbd = "token_embd.weight";
inline constexpr std::string_view kOutputNorm = "output_norm.weight";
inline constexpr std::string_view kOutput = "output.weight";
inline constexpr std::string_view kRopeFreqs = "rope_freqs.weight";
inline constexpr std::string_view kAttnNorm = "blk.{}.attn_norm.weight";
inline constexpr std::string_view kAttnQ = "blk.{}.attn_q.weight";
inline constexpr std::string_view kAttnK = "blk.{}.attn_k.weight";
inline constexpr std::string_view kAttnV = "blk.{}.attn_v.weight";
inline constexpr std::string_view kAttnOut = "blk.{}.attn_output.weight";
inline constexpr std::string_view kFfnNorm = "blk.{}.ffn_norm.weight";
inline constexpr std::string_view kFfnGate = "blk.{}.ffn_gate.weight";
inline constexpr std::string_view kFfnUp = "blk.{}.ffn_up.weight";
inline constexpr std::string_view kFfnDown = "blk.{}.ffn_down.weight";

inline std::string layer_tensor(std::string_view pattern, int64_t layer) {
  return fmt::format(fmt::runtime(pattern), layer);
}

}  // namespace kiln::gguf_names
