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

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

// Where the runtime finds each extension. x86-64: a cpuid register (leaf 1 ecx, leaf 7
// sub-leaf 0 ebx/ecx/edx, leaf 7 sub-leaf 1 eax, leaf 0x80000001 ecx), a bit, and the
// register state the OS must save for it (xgetbv). AArch64 Linux: AT_HWCAP (1) or
// AT_HWCAP2 (2) and a bit, as in the kernel's arch/arm64/include/uapi/asm/hwcap.h.
enum class CpuidReg : uint8_t { L1Ecx, L7Ebx, L7Ecx, L7Edx, L71Eax, E1Ecx };
enum class OsState : uint8_t { None, Avx, Avx512 };
struct X86Feature {
  std::string_view name;  // LLVM's
  CpuidReg reg;
  uint8_t bit;
  OsState state;
};
struct Aarch64Feature {
  std::string_view name;  // LLVM's
  uint8_t hwcap;
  uint8_t bit;
};

inline constexpr X86Feature kX86CheckedFeatures[] = {
    {"ssse3", CpuidReg::L1Ecx, 9, OsState::None},          {"sse4.1", CpuidReg::L1Ecx, 19, OsState::None},
    {"sse4.2", CpuidReg::L1Ecx, 20, OsState::None},        {"popcnt", CpuidReg::L1Ecx, 23, OsState::None},
    {"pclmul", CpuidReg::L1Ecx, 1, OsState::None},         {"aes", CpuidReg::L1Ecx, 25, OsState::None},
    {"movbe", CpuidReg::L1Ecx, 22, OsState::None},         {"lzcnt", CpuidReg::E1Ecx, 5, OsState::None},
    {"avx", CpuidReg::L1Ecx, 28, OsState::Avx},            {"avx2", CpuidReg::L7Ebx, 5, OsState::Avx},
    {"fma", CpuidReg::L1Ecx, 12, OsState::Avx},            {"f16c", CpuidReg::L1Ecx, 29, OsState::Avx},
    {"bmi", CpuidReg::L7Ebx, 3, OsState::None},            {"bmi2", CpuidReg::L7Ebx, 8, OsState::None},
    {"avx512f", CpuidReg::L7Ebx, 16, OsState::Avx512},     {"avx512dq", CpuidReg::L7Ebx, 17, OsState::Avx512},
    {"avx512cd", CpuidReg::L7Ebx, 28, OsState::Avx512},    {"avx512bw", CpuidReg::L7Ebx, 30, OsState::Avx512},
    {"avx512vl", CpuidReg::L7Ebx, 31, OsState::Avx512},    {"avx512ifma", CpuidReg::L7Ebx, 21, OsState::Avx512},
    {"avx512vbmi", CpuidReg::L7Ecx, 1, OsState::Avx512},   {"avx512vbmi2", CpuidReg::L7Ecx, 6, OsState::Avx512},
    {"avx512vnni", CpuidReg::L7Ecx, 11, OsState::Avx512},  {"avx512bitalg", CpuidReg::L7Ecx, 12, OsState::Avx512},
    {"avx512vpopcntdq", CpuidReg::L7Ecx, 14, OsState::Avx512},
    {"avx512bf16", CpuidReg::L71Eax, 5, OsState::Avx512},  {"avx512fp16", CpuidReg::L7Edx, 23, OsState::Avx512},
    {"avxvnni", CpuidReg::L71Eax, 4, OsState::Avx},        {"gfni", CpuidReg::L7Ecx, 8, OsState::None},
    {"vaes", CpuidReg::L7Ecx, 9, OsState::Avx},            {"vpclmulqdq", CpuidReg::L7Ecx, 10, OsState::Avx}};
inline constexpr Aarch64Feature kAarch64CheckedFeatures[] = {
    {"aes", 1, 3},       {"sha2", 1, 6},       {"crc", 1, 7},      {"lse", 1, 8},         // AES SHA2 CRC32 ATOMICS
    {"rdm", 1, 12},      {"fullfp16", 1, 10},  {"fp16fml", 1, 23}, {"dotprod", 1, 20},    // ASIMDRDM ASIMDHP ASIMDFHM ASIMDDP
    {"rcpc", 1, 15},     {"jsconv", 1, 13},    {"complxnum", 1, 14},                      // LRCPC JSCVT FCMA
    {"sve", 1, 22},      {"sve2", 2, 1},       {"sve2-bitperm", 2, 4},                    // SVE; HWCAP2 SVE2 SVEBITPERM
    {"i8mm", 2, 13},     {"bf16", 2, 14}};                                                // HWCAP2 I8MM BF16
// AMX is left out on purpose: LLVM emits its tile instructions only for intrinsics, which
// kiln's kernels do not use, so an artifact from an AMX machine runs on one without it.

// Whether the running CPU has `feature` (a name in the tables above). *known is set false
// for a name this runtime cannot check on this architecture (it is then not refused).
bool cpu_has_feature(std::string_view feature, bool* known);

// The running CPU's vendor as CPUID leaf 0 names it ("GenuineIntel", "AuthenticAMD", ...)
// on x86-64; "" elsewhere.
std::string_view cpu_vendor();

// The first feature of a comma-separated list the running CPU lacks, or "" if none.
std::string first_missing_cpu_feature(std::string_view features);

}  // namespace kiln
