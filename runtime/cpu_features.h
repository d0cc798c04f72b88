// runtime/cpu_features.h — the instruction-set extensions a compiled model may use and the
// runtime can detect, by their LLVM feature names.
//
// Codegen records in kiln_compiled_model::cpu_features every one of these that the
// profile enables (the CPU name's implied features included); kiln_model_load checks them
// against the CPU it runs on, so an artifact built for a newer core is refused with
// KILN_ERR_MODEL_MISMATCH naming what is missing, instead of dying on SIGILL in the first
// step. Detection: cpuid and xgetbv on x86-64 (the OS must also save the AVX / AVX-512
// state), getauxval(AT_HWCAP/AT_HWCAP2) on AArch64 Linux.
#pragma once

#include <string>
#include <string_view>

namespace kiln {

inline constexpr std::string_view kX86CheckedFeatures[] = {
    "sse4.2",   "popcnt",   "avx",      "avx2",       "fma",        "f16c",       "bmi",     "bmi2",
    "avx512f",  "avx512dq", "avx512cd", "avx512bw",   "avx512vl",   "avx512vbmi", "avx512vnni",
    "avxvnni",  "avx512bf16", "avx512fp16", "gfni",   "amx-tile",   "amx-int8"};
inline constexpr std::string_view kAarch64CheckedFeatures[] = {
    "lse", "fullfp16", "dotprod", "rcpc", "sve", "sve2", "i8mm", "bf16"};

// Whether the running CPU has `feature` (a name of the tables above). *known is set false
// for a name this runtime cannot check on this architecture (it is then not refused).
bool cpu_has_feature(std::string_view feature, bool* known);

// The first feature of a comma-separated list the running CPU lacks, or "" if none.
std::string first_missing_cpu_feature(std::string_view features);

}  // namespace kiln
