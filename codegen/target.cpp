// codegen/target.cpp — profiles. Profiles for phones (sm8650, sm8750) and x86-64-v3 come
// as files in a later step; `host` asks LLVM what this machine is.
#include "codegen/target.h"

#include <thread>

#include <llvm/ADT/StringMap.h>
#include <llvm/TargetParser/Host.h>

namespace kiln {

TargetProfile host_profile() {
  TargetProfile p;
  p.name = "host";
  p.triple = llvm::sys::getDefaultTargetTriple();
  p.cpu = llvm::sys::getHostCPUName().str();
  llvm::StringMap<bool> feats;
  std::string f;
  if (llvm::sys::getHostCPUFeatures(feats)) {
    // Sorted, so the feature string (and the object file) is the same on every run.
    std::vector<std::string> names;
    for (auto& kv : feats) names.push_back((kv.second ? "+" : "-") + kv.first().str());
    std::sort(names.begin(), names.end());
    for (auto& n : names) f += (f.empty() ? "" : ",") + n;
  }
  p.features = f;
  // LLVM 16 does not name every recent CPU (virtual machines often hide the model); tune
  // for the x86-64 level its features reach rather than for a 2003 "generic" core.
  if (p.cpu == "generic" && p.triple.rfind("x86_64", 0) == 0) {
    auto has = [&](const char* k) { auto it = feats.find(k); return it != feats.end() && it->second; };
    p.cpu = has("avx512f") && has("avx512bw") && has("avx512vl") ? "x86-64-v4"
            : has("avx2") && has("fma") ? "x86-64-v3"
            : "x86-64";
  }
  p.threads = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  return p;
}

std::vector<std::string> profile_names() { return {"host"}; }

Result<TargetProfile> find_profile(const std::string& name) {
  if (name == "host") return host_profile();
  std::string known;
  for (auto& n : profile_names()) known += (known.empty() ? "" : ", ") + n;
  return make_error("unknown profile '{}' (known: {})", name, known);
}

}  // namespace kiln
