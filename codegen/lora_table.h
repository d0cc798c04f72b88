// codegen/lora_table.h — the LoRA descriptor of a planned graph (kiln_lora_target rows).
//
// The runtime fills adapter slots knowing only this table (runtime/include/kiln/
// model_abi.h): for each lora node, its layer and module (from the base weight's name),
// shapes, and where plan-memory put its A and B inputs in the adapter region.
#pragma once

#include <vector>

#include "ir/graph.h"
#include "runtime/include/kiln/model_abi.h"
#include "support/result.h"

namespace kiln {

struct LoraTable {
  int64_t slots = 0, rank = 0;
  uint64_t scale_offset = 0;
  std::vector<kiln_lora_target> targets;  // sorted by (layer, module)
};

// Empty (slots 0) for a graph without lora nodes, or whose lora inputs are not named
// lora.<LLaMA projection weight>.a/.b. Needs plan-memory's adapter_offset.
Result<LoraTable> lora_table(const Graph& g);

}  // namespace kiln
