// passes/registry.cpp — the one list of every kiln pass, by name.
#include "passes/pass.h"
#include "passes/passes.h"

namespace kiln {

const std::vector<PassInfo>& registered_passes() {
  static const std::vector<PassInfo> kPasses = {
      {"dce", "remove nodes whose values are never used and have no side effects", create_dce_pass},
      {"cse", "merge nodes that compute the same op on the same operands and attributes", create_cse_pass},
      {"constant-fold", "evaluate nodes whose operands are all constants at compile time", create_constant_fold_pass},
      {"lora-as-input", "turn each LoRA target matmul into matmul + lora with adapter inputs (lora_slots, lora_rank)", create_lora_as_input_pass},
      {"ds2d-unroll", "make the verify graph of a DS2D tree template: constant parent array and ancestor mask on every kv_write and attention (ds2d_parent or ds2d_nodes, ds2d_topology)", create_ds2d_unroll_pass},
      {"freeze-base", "lay every weight out in one aligned blob at fixed offsets (needs max_rows)", create_freeze_base_pass},
      {"plan-memory", "assign arena offsets to activations and KV offsets to state (needs max_rows, max_threads)", create_plan_memory_pass},
  };
  return kPasses;
}

}  // namespace kiln
