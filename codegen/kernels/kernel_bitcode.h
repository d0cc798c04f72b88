// codegen/kernels/kernel_bitcode.h — the kernel templates as LLVM bitcode, per target.
//
// Built from codegen/kernels/*.c by clang-16 at kiln's build time (see CMakeLists.txt):
// one module per architecture, holding every function of kernels.h (unoptimised,
// without target-cpu/target-features/tune-cpu attributes; each function carries
// "no-builtins"). Codegen parses it into the model's LLVMContext, links it, binds static
// arguments and optimises.
#pragma once

#include <string_view>

namespace kiln {

// The bitcode for "x86_64" or "aarch64"; an empty view for any other architecture.
// The bytes are static and 16-byte aligned (llvm::MemoryBuffer::getMemBuffer can wrap
// them without a copy).
std::string_view kernel_bitcode(std::string_view arch);

}  // namespace kiln
