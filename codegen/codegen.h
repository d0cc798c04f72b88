// codegen/codegen.h — the LLVM backend: a planned graph becomes native code.
//
// Input is a graph after freeze-base and plan-memory (weights at blob offsets, values at
// arena offsets). Each op becomes a call of a kernel template (codegen/kernels, C
// compiled to bitcode at build time) through a wrapper that binds the op's static shapes
// as constants; LLVM's O3 inlines and specialises the templates for the profile's CPU.
// The result is one object file defining the kiln_compiled_model of
// runtime/include/kiln/model_abi.h.
#pragma once

#include <cstdint>
#include <string>

#include "codegen/target.h"
#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

// The symbol `kiln compile` gives the compiled model unless told otherwise.
inline constexpr const char* kDefaultModelSymbol = "kiln_model_code";

struct CodegenOptions {
  std::string symbol = kDefaultModelSymbol;  // name of the exported kiln_compiled_model
  uint64_t model_hash = 0;            // identity shared with model.kiln
  uint32_t format_version = 1;        // the model.kiln format the code reads
  bool want_assembly = false;
  bool want_llvm_ir = false;          // optimised LLVM IR text
  // DS2D entry points (ABI 4) lowered into the same module as the step and sharing its
  // weights and KV layout: verify graphs (ds2d-unroll output, ascending template size)
  // and the early-exit draft graph (its own arena plan; arena_bytes becomes the largest).
  std::vector<const Graph*> tree_verify;
  const Graph* draft = nullptr;
  int64_t draft_layers = 0;
  // ABI 6: the step without LoRA side paths (base_entry_graph, its own arena plan), run
  // by the runtime when no row of a step has an adapter. Null: none.
  const Graph* step_base = nullptr;
};

struct CompiledCode {
  std::string object;     // ELF relocatable object
  std::string assembly;   // when asked for
  std::string llvm_ir;    // when asked for
  size_t kernels = 0;     // specialised kernel functions emitted
  std::string cpu_features;  // extensions the code may use (kiln_compiled_model::cpu_features)
};

Result<CompiledCode> compile_graph(const Graph& g, const TargetProfile& profile,
                                   const CodegenOptions& opts);

}  // namespace kiln
