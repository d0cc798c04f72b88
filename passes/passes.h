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
std::unique_ptr<Pass> create_ds2d_unroll_pass();    // ds2d_unroll.cpp

}  // namespace kiln
