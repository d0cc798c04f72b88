// runtime/cpu_features.cpp — see cpu_features.h.
#include "runtime/cpu_features.h"

#include <cstdint>

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace kiln {
namespace {

#if defined(__x86_64__)
struct X86Bits {
  uint32_t l1_ecx = 0, l7_ebx = 0, l7_ecx = 0, l7_edx = 0, l71_eax = 0, e1_ecx = 0;
  uint64_t xcr0 = 0;
};

X86Bits read_x86() {
  X86Bits b;
  unsigned a, bx, c, d;
  if (!__get_cpuid(0, &a, &bx, &c, &d)) return b;
  const unsigned max_leaf = a;
  if (__get_cpuid(1, &a, &bx, &c, &d)) b.l1_ecx = c;
  if (max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &bx, &c, &d)) {
    b.l7_ebx = bx, b.l7_ecx = c, b.l7_edx = d;
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &bx, &c, &d)) b.l71_eax = a;
  }
  if (__get_cpuid(0x80000000, &a, &bx, &c, &d) && a >= 0x80000001 && __get_cpuid(0x80000001, &a, &bx, &c, &d))
    b.e1_ecx = c;
  if (b.l1_ecx & (1u << 27)) {  // OSXSAVE: xgetbv says which register states the OS saves
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    b.xcr0 = ((uint64_t)hi << 32) | lo;
  }
  return b;
}

bool x86_has(std::string_view f, bool* known) {
  static const X86Bits b = read_x86();
  const bool avx_os = (b.xcr0 & 0x6) == 0x6, avx512_os = avx_os && (b.xcr0 & 0xe0) == 0xe0;
  auto bit = [](uint32_t r, int i) { return ((r >> i) & 1u) != 0; };
  *known = true;
  if (f == "ssse3") return bit(b.l1_ecx, 9);
  if (f == "sse4.1") return bit(b.l1_ecx, 19);
  if (f == "sse4.2") return bit(b.l1_ecx, 20);
  if (f == "pclmul") return bit(b.l1_ecx, 1);
  if (f == "aes") return bit(b.l1_ecx, 25);
  if (f == "movbe") return bit(b.l1_ecx, 22);
  if (f == "lzcnt") return bit(b.e1_ecx, 5);
  if (f == "popcnt") return bit(b.l1_ecx, 23);
  if (f == "avx") return bit(b.l1_ecx, 28) && avx_os;
  if (f == "fma") return bit(b.l1_ecx, 12) && avx_os;
  if (f == "f16c") return bit(b.l1_ecx, 29) && avx_os;
  if (f == "avx2") return bit(b.l7_ebx, 5) && avx_os;
  if (f == "bmi") return bit(b.l7_ebx, 3);
  if (f == "bmi2") return bit(b.l7_ebx, 8);
  if (f == "avx512f") return bit(b.l7_ebx, 16) && avx512_os;
  if (f == "avx512dq") return bit(b.l7_ebx, 17) && avx512_os;
  if (f == "avx512cd") return bit(b.l7_ebx, 28) && avx512_os;
  if (f == "avx512bw") return bit(b.l7_ebx, 30) && avx512_os;
  if (f == "avx512vl") return bit(b.l7_ebx, 31) && avx512_os;
  if (f == "avx512ifma") return bit(b.l7_ebx, 21) && avx512_os;
  if (f == "avx512vbmi") return bit(b.l7_ecx, 1) && avx512_os;
  if (f == "avx512vbmi2") return bit(b.l7_ecx, 6) && avx512_os;
  if (f == "vaes") return bit(b.l7_ecx, 9) && avx_os;
  if (f == "vpclmulqdq") return bit(b.l7_ecx, 10) && avx_os;
  if (f == "avx512bitalg") return bit(b.l7_ecx, 12) && avx512_os;
  if (f == "avx512vpopcntdq") return bit(b.l7_ecx, 14) && avx512_os;
  if (f == "gfni") return bit(b.l7_ecx, 8);
  if (f == "avx512vnni") return bit(b.l7_ecx, 11) && avx512_os;
  if (f == "avx512fp16") return bit(b.l7_edx, 23) && avx512_os;
  if (f == "avxvnni") return bit(b.l71_eax, 4) && avx_os;
  if (f == "avx512bf16") return bit(b.l71_eax, 5) && avx512_os;
  *known = false;
  return false;
}
#endif

#if defined(__aarch64__) && defined(__linux__)
bool aarch64_has(std::string_view f, bool* known) {
  static const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  auto bit = [](unsigned long r, int i) { return ((r >> i) & 1ul) != 0; };
  *known = true;
  // Bits as in the kernel's arch/arm64/include/uapi/asm/hwcap.h.
  if (f == "aes") return bit(hw, 3);        // HWCAP_AES
  if (f == "sha2") return bit(hw, 6);       // HWCAP_SHA2
  if (f == "crc") return bit(hw, 7);        // HWCAP_CRC32
  if (f == "lse") return bit(hw, 8);        // HWCAP_ATOMICS
  if (f == "rdm") return bit(hw, 12);       // HWCAP_ASIMDRDM
  if (f == "jsconv") return bit(hw, 13);    // HWCAP_JSCVT
  if (f == "complxnum") return bit(hw, 14); // HWCAP_FCMA
  if (f == "fp16fml") return bit(hw, 23);   // HWCAP_ASIMDFHM
  if (f == "fullfp16") return bit(hw, 10);  // HWCAP_ASIMDHP
  if (f == "dotprod") return bit(hw, 20);   // HWCAP_ASIMDDP
  if (f == "rcpc") return bit(hw, 15);      // HWCAP_LRCPC
  if (f == "sve") return bit(hw, 22);       // HWCAP_SVE
  if (f == "sve2") return bit(hw2, 1);      // HWCAP2_SVE2
  if (f == "sve2-bitperm") return bit(hw2, 4);  // HWCAP2_SVEBITPERM
  if (f == "i8mm") return bit(hw2, 13);     // HWCAP2_I8MM
  if (f == "bf16") return bit(hw2, 14);     // HWCAP2_BF16
  *known = false;
  return false;
}
#endif

}  // namespace

bool cpu_has_feature(std::string_view feature, bool* known) {
#if defined(__x86_64__)
  return x86_has(feature, known);
#elif defined(__aarch64__) && defined(__linux__)
  return aarch64_has(feature, known);
#else
  *known = false;
  return false;
#endif
}

std::string first_missing_cpu_feature(std::string_view features) {
  while (!features.empty()) {
    const size_t comma = features.find(',');
    const std::string_view f = features.substr(0, comma);
    features = comma == std::string_view::npos ? std::string_view() : features.substr(comma + 1);
    bool known = false;
    if (!f.empty() && !cpu_has_feature(f, &known) && known) return std::string(f);
  }
  return "";
}

}  // namespace kiln
