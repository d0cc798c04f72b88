// codegen/compile.h — the whole compile pipeline, as one short function a tool calls.
//
//   GGUF --lower--> graph --passes--> planned graph --LLVM--> model.o
//                                  \-> frozen weights + tokenizer --> model.kiln
//   artifact DIR: model.o, libmodel.a, model.h, model.kiln (+ model.s, model.ll on request)
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "codegen/codegen.h"
#include "passes/pass.h"
#include "support/result.h"

namespace kiln {

struct CompileRequest {
  std::string model_path;            // GGUF
  std::string out_dir;               // artifact folder (replaced atomically)
  std::string profile = "host";
  int64_t max_rows = 64;             // tokens per step (prefill chunk)
  int64_t max_streams = 1;
  int64_t max_context = 2048;
  int64_t threads = 0;               // 0: the profile's
  bool int8_activations = true;      // quantized matmuls round activations to int8 blocks
                                     // where the profile has an integer dot product
  std::string quantize = "none";     // int4|q4_0|q4_1|none: quantize-int4 on float weights
  int64_t group_size = 0;            // elements per INT4 scale; 0: the profile's
  std::string quantize_head = "q8_0";  // embedding/LM head policy: q8_0|int4
  int64_t lora_slots = 0;            // LoRA slots K (slot 0 the zero adapter); 0: no LoRA
  int64_t lora_rank = 16;            // the compiled maximum adapter rank R
  std::string lora_targets = "q,k,v,o,gate,up,down";  // modules that take adapters
  std::string symbol = "kiln_model_code";  // = kDefaultModelSymbol (codegen/loaded_artifact.h)
  bool emit_assembly = false;        // also write model.s
  bool emit_llvm = false;            // also write model.ll
  std::string extra_passes;          // run before the backend's own (e.g. "cse,dce")
  PassManagerOptions pass_options;   // dumps, verify-each, timing
  bool progress = true;
};

struct CompileSummary {
  uint64_t model_hash = 0;
  uint64_t weights_bytes = 0, arena_bytes = 0, kv_bytes = 0, object_bytes = 0;
  size_t kernels = 0;
  double seconds = 0;
  std::string triple, cpu;
};

// The passes every compile runs, in order.
// fuse-dequant-matmul first: codegen has no dequant kernel (quantized matmuls read blocks).
// The SwiGLU and norm fusions pay for decode (qmatmul.c's header has the measurements)
// and give the unfused kernels' bits; they do nothing with --float-activations.
inline constexpr const char* kBackendPipeline =
    "fuse-dequant-matmul,fuse-matmul-swiglu,fuse-rmsnorm-matmul,cse,dce,freeze-base,plan-memory";

Result<CompileSummary> compile_model(const CompileRequest& req);

}  // namespace kiln
