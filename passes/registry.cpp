// passes/registry.cpp — the one list of every kiln pass, by name.
#include "passes/pass.h"
#include "passes/passes.h"

namespace kiln {

const std::vector<PassInfo>& registered_passes() {
  static const std::vector<PassInfo> kPasses = {
      {"dce", "remove nodes whose values are never used and have no side effects", create_dce_pass, /*keeps_memory_plan=*/true},
      {"cse", "merge nodes that compute the same op on the same operands and attributes", create_cse_pass},
      {"constant-fold", "evaluate nodes whose operands are all constants at compile time", create_constant_fold_pass},
      {"lora-as-input", "turn each LoRA target matmul into matmul + lora with adapter inputs (lora_slots, lora_rank)", create_lora_as_input_pass},
      {"quantize-int4", "float weights to INT4 blocks read through dequant (quantize, group_size, quantize_head)", create_quantize_int4_pass},
      {"fuse-dequant-matmul", "fold matmul(x, dequant(W)) into one matmul on the quantized weight", create_fuse_dequant_matmul_pass},
      {"fuse-matmul-swiglu", "gate/up matmuls and silu*mul as one matmul_swiglu (q4/q8 weights, int8 activations)", create_fuse_matmul_swiglu_pass},
      {"fuse-rmsnorm-matmul", "fold rms_norm into the q4/q8 matmuls that read it (rms_matmul; int8 activations)", create_fuse_rmsnorm_matmul_pass},
      {"fuse-qkv", "the three rms_matmuls on one x (q, k, v) as one kernel call that quantizes x once (qkv)", create_fuse_qkv_pass},
      {"pack-weights", "q4/q8 weights in the kernels' 16-row interleaved layout, made at compile time (pack_weights)", create_pack_weights_pass, /*keeps_memory_plan=*/true},
      {"ds2d-unroll", "make the verify graph of a DS2D tree template: constant parent array and ancestor mask on every kv_write and attention (ds2d_parent or ds2d_nodes, ds2d_topology)", create_ds2d_unroll_pass, /*keeps_memory_plan=*/true},
      {"freeze-base", "lay every weight out in one aligned blob at fixed offsets (needs max_rows)", create_freeze_base_pass, /*keeps_memory_plan=*/true},
      {"plan-memory", "assign arena offsets to activations and KV offsets to state (needs max_rows, max_threads)", create_plan_memory_pass},
  };
  return kPasses;
}

}  // namespace kiln
