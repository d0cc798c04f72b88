// passes/passes.h — constructors of every pass (one pass per file in passes/).
#pragma once

#include <memory>

#include "passes/pass.h"

namespace kiln {

std::unique_ptr<Pass> create_dce_pass();            // dce.cpp
std::unique_ptr<Pass> create_cse_pass();            // cse.cpp
std::unique_ptr<Pass> create_constant_fold_pass();  // constant_fold.cpp
std::unique_ptr<Pass> create_freeze_base_pass();    // freeze_base.cpp
std::unique_ptr<Pass> create_plan_memory_pass();    // plan_memory.cpp
std::unique_ptr<Pass> create_lora_as_input_pass();  // lora_as_input.cpp
std::unique_ptr<Pass> create_quantize_int4_pass();  // quantize_int4.cpp
std::unique_ptr<Pass> create_fuse_dequant_matmul_pass();  // fuse_dequant_matmul.cpp
std::unique_ptr<Pass> create_fuse_matmul_swiglu_pass();   // fuse_matmul_swiglu.cpp
std::unique_ptr<Pass> create_fuse_rmsnorm_matmul_pass();  // fuse_rmsnorm_matmul.cpp
std::unique_ptr<Pass> create_fuse_qkv_pass();             // fuse_qkv.cpp
std::unique_ptr<Pass> create_pack_weights_pass();         // pack_weights.cpp
std::unique_ptr<Pass> create_ds2d_unroll_pass();    // ds2d_unroll.cpp

}  // namespace kiln
