// codegen/kernels/kernel_bitcode.cpp — see kernel_bitcode.h.
#include "codegen/kernels/kernel_bitcode.h"

namespace kiln {
namespace {
#include "kernel_bitcode_data.inc"
}  // namespace

std::string_view kernel_bitcode(std::string_view arch) {
  for (const KernelBitcode& k : kKernelBitcode)
    if (arch == k.arch) return {reinterpret_cast<const char*>(k.data), k.size};
  return {};
}

}  // namespace kiln
