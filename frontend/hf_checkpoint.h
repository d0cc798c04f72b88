// frontend/hf_checkpoint.h — Hugging Face LLaMA checkpoints (a folder of config.json,
// model.safetensors or its shards, tokenizer.json, tokenizer_config.json) as GGUF.
//
// The rest of kiln reads models through GgufFile, so a checkpoint is translated once, in
// memory, into the GGUF that llama.cpp's converter would write for it: the hyperparameters
// under llama.*, the tensors under GGUF names (hf_tensor_table below) in their own dtype
// (F32, F16 or BF16; no rounding), shapes checked against config.json,
// q_proj and k_proj rows permuted for rope as the converter permutes them, and the BPE
// vocabulary, merges, special tokens and chat template under tokenizer.*. Everything
// downstream (passes, quantization, the tokenizer) is then the same code for both formats.
//
// Supported: model_type "llama" (LlamaForCausalLM) without rope scaling; byte-level BPE
// tokenizers whose pre-tokenizer is one kiln implements (GPT-2's, digits + GPT-2's as in
// SmolLM and StarCoder, LLaMA 3's). Anything else is an Error naming the file and key.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frontend/gguf.h"
#include "frontend/llama.h"
#include "frontend/lora_names.h"
#include "support/result.h"

namespace kiln {

class GgufWriter;

// True when `path` is a folder holding a config.json (a Hugging Face checkpoint).
bool is_hf_checkpoint(const std::string& path);

// The GGUF bytes of the checkpoint in folder `dir`; without tensors, only its metadata
// (hyperparameters, tokenizer, chat template: what a command needs besides the compile).
Result<std::string> hf_checkpoint_to_gguf(const std::string& dir, bool with_tensors = true);

// config.json: the hyperparameters (tied_output from tie_word_embeddings; n_vocab from
// vocab_size, 0 when absent) and the special-token ids it names, the tokenizer's fallbacks.
struct HfConfig {
  LlamaConfig llama;
  std::optional<int32_t> bos, eos;
  // rope_scaling of rope_type "llama3" (LLaMA 3.1/3.2): each rotated pair's frequency
  // divisor, the GGUF's rope_freqs.weight; empty for plain rope.
  std::vector<float> rope_factors;
};
// The pieces, on file contents (tests and the fuzzer); `dir` only names the files in errors.
Result<HfConfig> hf_config_from_json(std::string_view config_json, const std::string& dir);
// The tokenizer.* keys of tokenizer.json, tokenizer_config.json ("{}" when absent) and the
// chat template (tokenizer_config.json's, else `chat_template`, e.g. chat_template.jinja);
// returns the vocabulary size (ids the vocabulary skips, and those up to config.json's
// vocab_size, become unused "[PAD<id>]" tokens, as in llama.cpp's converter).
Result<int64_t> hf_tokenizer_to_gguf(GgufWriter& w, std::string_view tokenizer_json,
                                     std::string_view tokenizer_config_json, std::optional<std::string> chat_template,
                                     const HfConfig& config, const std::string& dir);

// One tensor of a LLaMA checkpoint: its Hugging Face and GGUF names, the rope permutation
// of its rows, its shape (row-major, as safetensors lists it) and whether it may be absent.
struct HfTensor {
  std::string hf, gguf;
  lora_names::RopePermute permute = lora_names::RopePermute::None;
  std::vector<int64_t> shape;
  bool optional = false;
  // Rope groups of its rows (q_proj: the heads; k_proj: the kv heads), 0 for no permutation.
  int64_t rope_groups(const LlamaConfig& c) const {
    return permute == lora_names::RopePermute::Heads ? c.n_head : permute == lora_names::RopePermute::KvHeads ? c.n_head_kv : 0;
  }
};
// Every tensor of the model `c` describes (c.n_vocab rows of embedding and LM head).
std::vector<HfTensor> hf_tensor_table(const LlamaConfig& c);

// A model for any command: a GGUF file, or a Hugging Face checkpoint folder translated as
// hf_checkpoint_to_gguf does (its GgufFile's path() is the folder; with_tensors = false
// leaves a folder's tensors out). Either way the weights are mapped, not read: a folder's
// tensors point into its safetensors files, but for q and k, whose rows are permuted
// (so reading a folder costs those two copies, not the model's size, in memory).
Result<std::unique_ptr<GgufFile>> open_model_file(const std::string& path, bool with_tensors = true);

}  // namespace kiln
