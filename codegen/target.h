// codegen/target.h — target profiles: which CPU kiln compiles for.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "support/result.h"

namespace kiln {

struct TargetProfile {
  std::string name;      // "host", ...
  std::string triple;    // LLVM target triple
  std::string cpu;       // LLVM CPU name
  std::string features;  // LLVM feature string, e.g. "+avx2,+fma"
  int64_t threads = 2;   // threads the compiled step is planned for (max)
};

// The machine kiln runs on, as LLVM detects it.
TargetProfile host_profile();
// Looks a profile up by name (today: "host").
Result<TargetProfile> find_profile(const std::string& name);
std::vector<std::string> profile_names();

}  // namespace kiln
