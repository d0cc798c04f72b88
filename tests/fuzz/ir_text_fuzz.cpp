// tests/fuzz/ir_text_fuzz.cpp — libFuzzer target for graph IR text, which kiln dump and
// kiln compile take as input (frontend/ir_input.h): the parser, the verifier, the printer
// (what it prints of a verified graph must parse back to the same text) and the graph
// passes, each of which must turn any verified graph into a verified graph or an Error.
// Weights are not attached: the passes that read weight bytes must refuse the graph.
// Any input must yield a value or an Error; sanitizers catch everything else.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/pass.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln;
  auto g = parse_graph(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.kir");
  if (!g.ok() || !verify(*g).ok()) return 0;
  const std::string printed = print_graph(*g);
  auto again = parse_graph(printed, "printed.kir");
  if (!again.ok() || print_graph(*again) != printed) __builtin_trap();  // the text must round-trip
  // Every pass alone, in pipeline order, on a copy: one that refuses the graph (an option
  // it lacks, weights it needs) leaves it as it was for the next; one that accepts must
  // leave a graph that verifies.
  Graph cur = std::move(*g);
  for (const char* pass : {"constant-fold", "cse", "dce", "quantize-int4", "lora-as-input", "fuse-dequant-matmul",
                           "fuse-matmul-swiglu", "fuse-rmsnorm-matmul", "fuse-qkv", "pack-weights", "ds2d-unroll",
                           "freeze-base", "plan-memory"}) {
    auto copy = clone_graph(cur);
    if (!copy.ok()) __builtin_trap();
    // The pass itself, not through a PassManager: a manager refuses a change to a graph
    // planned before (IR text printed after plan-memory), which would skip the check below.
    const PassInfo* info = find_pass(pass);
    if (!info) __builtin_trap();
    if (!info->create()->run(*copy).ok()) continue;
    if (!verify(*copy).ok()) __builtin_trap();  // a pass broke a valid graph
    cur = std::move(*copy);
  }
  return 0;
}
