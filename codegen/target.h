// codegen/target.h — target profiles: which CPU kiln compiles for.
//
// A profile is a small JSON file in profiles/ (docs/profiles.md): LLVM triple, CPU and
// features, plus what the passes plan for (threads, memory budget, INT4 group size).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/result.h"

namespace kiln {

// How the packed matmul kernels prefetch weights ahead of their reads (qmatmul.c): a
// non-temporal prefetch (prefetchnta / a streaming PRFM) or one into the outer cache
// (prefetcht2 / PRFM into L3). Which is faster depends on the cache design: see
// docs/profiles.md. Profile files spell them "non-temporal" and "outer-cache".
enum class WeightPrefetch { NonTemporal, OuterCache };
// The profile-file spelling of a kind, and the kind of a spelling (false if unknown).
const char* weight_prefetch_name(WeightPrefetch w);
bool parse_weight_prefetch(std::string_view name, WeightPrefetch* out);

struct TargetProfile {
  std::string name;         // "host", "x86-64-v3", "sm8650", ...
  std::string description;  // one line for people
  std::string triple;       // LLVM target triple
  std::string cpu;          // LLVM CPU name (scheduling model and default features)
  std::string features;     // LLVM feature string, e.g. "+avx2,+fma"
  int64_t threads = 2;      // threads the compiled step is planned for (max)
  int64_t vector_bits = 128;      // SIMD register width (informational: codegen picks by features)
  int64_t memory_budget_mb = 0;   // weights + KV + arena must fit (compile checks); 0 = no limit
  int64_t group_size = 32;        // INT4 quantization group (weights per scale)
  WeightPrefetch weight_prefetch = WeightPrefetch::NonTemporal;  // "detect" in a file: the host's
  std::string source;       // the file it came from ("" for the built-in host)
};

// Whether the profile enables `feature` (e.g. "+avx512vnni"): its feature list over what
// its CPU name implies, as LLVM's subtarget for the profile sees it.
bool has_feature(const TargetProfile& p, std::string_view feature);
// The extensions of runtime/cpu_features.h's table for the profile's architecture that the
// profile enables (has_feature), comma-separated: what kiln_model_load checks the running
// CPU for, so an artifact for a newer core is refused rather than fault.
std::string checked_cpu_features(const TargetProfile& p);
// Whether codegen has packed-weight kernels (pack-weights, ir/packing.h) for the profile:
// AVX512-VNNI (+VL, +BW) on x86-64, dotprod on AArch64.
bool has_packed_kernels(const TargetProfile& p);
// Whether codegen has int8-activation matmul kernels (and so the fused rms_matmul and
// matmul_swiglu) for the profile: AVX2 on x86-64, dotprod on AArch64. Elsewhere the float
// kernels serve, with activations in f32.
bool has_int8_kernels(const TargetProfile& p);

// The machine kiln runs on, as LLVM detects it.
TargetProfile host_profile();
// A profile by name (a file NAME.json in the profile folder) or by the path of a .json
// file (any argument containing '/' or ending in ".json"). Errors name the file and field.
Result<TargetProfile> find_profile(const std::string& name_or_path);
// Reads one profile file.
Result<TargetProfile> load_profile_file(const std::string& path);
// The names of the profiles in the profile folder, sorted ("host" when there is none).
std::vector<std::string> profile_names();
// The profile folder: KILN_PROFILE_DIR (the source tree's profiles/, compiled in) if it
// exists, else <exe>/../share/kiln/profiles (an installed kiln); "" when neither does.
std::string profile_dir();

}  // namespace kiln
