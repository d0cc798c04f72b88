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
    "ssse3",      "sse4.1",     "sse4.2",       "popcnt",          "pclmul",     "aes",     "movbe",
    "lzcnt",      "avx",        "avx2",         "fma",             "f16c",       "bmi",     "bmi2",
    "avx512f",    "avx512dq",   "avx512cd",     "avx512bw",        "avx512vl",   "avx512ifma",
    "avx512vbmi", "avx512vbmi2", "avx512vnni",  "avx512bitalg",    "avx512vpopcntdq", "avx512bf16",
    "avx512fp16", "avxvnni",    "gfni",         "vaes",            "vpclmulqdq"};
inline constexpr std::string_view kAarch64CheckedFeatures[] = {
    "aes",      "sha2",    "crc",  "lse",  "rdm",  "fullfp16", "fp16fml", "dotprod", "rcpc",
    "jsconv",   "complxnum", "sve", "sve2", "sve2-bitperm", "i8mm", "bf16"};
// AMX is left out on purpose: LLVM emits its tile instructions only for intrinsics, which
// kiln's kernels do not use, so an artifact from an AMX machine runs on one without it.

// Whether the running CPU has `feature` (a name of the tables above). *known is set false
// for a name this runtime cannot check on this architecture (it is then not refused).
bool cpu_has_feature(std::string_view feature, bool* known);

// The first feature of a comma-separated list the running CPU lacks, or "" if none.
std::string first_missing_cpu_feature(std::string_view features);

}  // namespace kiln
