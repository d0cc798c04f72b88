// frontend/hf_checkpoint.h — Hugging Face LLaMA checkpoints (a folder of config.json,
// model.safetensors or its shards, tokenizer.json, tokenizer_config.json) as GGUF.
//
// The rest of kiln reads models through GgufFile, so a checkpoint is translated once, in
// memory, into the GGUF that llama.cpp's converter would write for it: the hyperparameters
// under llama.*, the tensors under GGUF names (the HF <-> GGUF table of lora_names.h, plus
// the embedding, norms and LM head) in their own dtype (F32, F16 or BF16; no rounding),
// q_proj and k_proj rows permuted for rope as the converter permutes them, and the BPE
// vocabulary, merges, special tokens and chat template under tokenizer.*. Everything
// downstream (passes, quantization, the tokenizer) is then the same code for both formats.
//
// Supported: model_type "llama" (LlamaForCausalLM) without rope scaling; byte-level BPE
// tokenizers whose pre-tokenizer is one kiln implements (GPT-2's, digits + GPT-2's as in
// SmolLM and StarCoder, LLaMA 3's). Anything else is an Error naming the file and key.
#pragma once

#include <memory>
#include <string>

#include "frontend/gguf.h"
#include "frontend/llama.h"
#include "support/result.h"

namespace kiln {

class GgufWriter;

// True when `path` is a folder holding a config.json (a Hugging Face checkpoint).
bool is_hf_checkpoint(const std::string& path);

// The GGUF bytes of the checkpoint in folder `dir`.
Result<std::string> hf_checkpoint_to_gguf(const std::string& dir);

// The pieces, on file contents (tests and the fuzzer); `dir` only names the files in
// errors. The hyperparameters of config.json:
Result<LlamaConfig> hf_config_from_json(std::string_view config_json, const std::string& dir);
// The tokenizer.* keys of tokenizer.json and tokenizer_config.json ("{}" when absent).
Status hf_tokenizer_to_gguf(GgufWriter& w, std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                            const std::string& dir);

// A model for any command: a GGUF file, or a Hugging Face checkpoint folder translated by
// hf_checkpoint_to_gguf (its GgufFile's path() is the folder).
Result<std::unique_ptr<GgufFile>> open_model_file(const std::string& path);

}  // namespace kiln
