// runtime/cpu_features.cpp — see cpu_features.h.
#include "runtime/cpu_features.h"

#include <cstdint>
#include <cstring>

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
  char vendor[13] = {};  // leaf 0: ebx, edx, ecx
};

X86Bits read_x86() {
  X86Bits b;
  unsigned a, bx, c, d;
  if (!__get_cpuid(0, &a, &bx, &c, &d)) return b;
  const unsigned max_leaf = a;
  std::memcpy(b.vendor, &bx, 4);
  std::memcpy(b.vendor + 4, &d, 4);
  std::memcpy(b.vendor + 8, &c, 4);
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

const X86Bits& x86_bits() {
  static const X86Bits b = read_x86();
  return b;
}

bool x86_has(std::string_view f, bool* known) {
  const X86Bits& b = x86_bits();
  const bool avx_os = (b.xcr0 & 0x6) == 0x6, avx512_os = avx_os && (b.xcr0 & 0xe0) == 0xe0;
  for (const X86Feature& x : kX86CheckedFeatures) {
    if (x.name != f) continue;
    *known = true;
    const uint32_t reg = x.reg == CpuidReg::L1Ecx   ? b.l1_ecx
                         : x.reg == CpuidReg::L7Ebx ? b.l7_ebx
                         : x.reg == CpuidReg::L7Ecx ? b.l7_ecx
                         : x.reg == CpuidReg::L7Edx ? b.l7_edx
                         : x.reg == CpuidReg::L71Eax ? b.l71_eax
                                                     : b.e1_ecx;
    const bool os = x.state == OsState::None ? true : x.state == OsState::Avx ? avx_os : avx512_os;
    return ((reg >> x.bit) & 1u) != 0 && os;
  }
  *known = false;
  return false;
}
#endif

#if defined(__aarch64__) && defined(__linux__)
bool aarch64_has(std::string_view f, bool* known) {
  static const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  for (const Aarch64Feature& x : kAarch64CheckedFeatures) {
    if (x.name != f) continue;
    *known = true;
    return (((x.hwcap == 1 ? hw : hw2) >> x.bit) & 1ul) != 0;
  }
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

std::string_view cpu_vendor() {
#if defined(__x86_64__)
  return x86_bits().vendor;
#else
  return "";
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
