// codegen/target.cpp — target profiles, read from profiles/*.json.
//
// A profile file names the LLVM triple, CPU and features kiln compiles for and what the
// passes plan for (threads, memory budget, group size); docs/profiles.md describes the
// fields. "detect" (host.json) asks LLVM what this machine is. Every file is checked
// strictly: unknown fields, wrong types and CPUs LLVM does not know are errors that name
// the file and the field.
#include "codegen/target.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>

#include <llvm/ADT/StringMap.h>
#include <llvm/MC/MCSubtargetInfo.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/JSON.h>
#include <llvm/Support/Path.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/TargetParser/Host.h>

#include "runtime/cpu_features.h"
#include "support/file.h"

// codegen/CMakeLists.txt defines KILN_PROFILE_DIR as the source tree's profiles/; without
// it, the same folder is found from this file's (absolute, as CMake passes it) path.
#ifndef KILN_PROFILE_DIR
#define KILN_PROFILE_DIR_FROM_FILE 1
#endif

namespace kiln {

namespace {
// LLVM's target and subtarget descriptions (no code generators: profiles only ask what a
// triple and CPU are and have), registered once.
void init_llvm_target_mcs() {
  static bool done = [] {
    llvm::InitializeAllTargetInfos();
    llvm::InitializeAllTargets();
    llvm::InitializeAllTargetMCs();
    return true;
  }();
  (void)done;
}

bool is_dir(const std::string& p) { return !p.empty() && llvm::sys::fs::is_directory(p); }

int64_t vector_bits_of(const llvm::StringMap<bool>& feats, const std::string& triple) {
  auto has = [&](const char* k) { auto it = feats.find(k); return it != feats.end() && it->second; };
  if (triple.rfind("x86_64", 0) == 0) return has("avx512f") ? 512 : has("avx") ? 256 : 128;
  return 128;  // AArch64 NEON (kiln does not emit SVE)
}

// The weight prefetch for this machine: measured (bench/qmatmul_rows --weight-prefetch
// both), a non-temporal prefetch made the packed kernels 2x slower on an Intel Xeon and an
// ordinary one ~10% slower on an AMD EPYC. So "outer-cache" on Intel CPUs, "non-temporal"
// elsewhere (AMD, and AArch64, where the phones' streaming PRFM has served).
WeightPrefetch host_weight_prefetch() {
  return cpu_vendor() == "GenuineIntel" ? WeightPrefetch::OuterCache : WeightPrefetch::NonTemporal;
}

}  // namespace

const char* weight_prefetch_name(WeightPrefetch w) {
  return w == WeightPrefetch::OuterCache ? "outer-cache" : "non-temporal";
}
bool parse_weight_prefetch(std::string_view name, WeightPrefetch* out) {
  for (WeightPrefetch w : {WeightPrefetch::NonTemporal, WeightPrefetch::OuterCache})
    if (name == weight_prefetch_name(w)) { *out = w; return true; }
  return false;
}

TargetProfile host_profile() {
  TargetProfile p;
  p.name = "host";
  p.description = "the machine kiln runs on, as LLVM detects it";
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
  p.vector_bits = vector_bits_of(feats, p.triple);
  p.threads = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  p.weight_prefetch = host_weight_prefetch();
  return p;
}

std::string profile_dir() {
#ifdef KILN_PROFILE_DIR_FROM_FILE
  std::string src = llvm::sys::path::parent_path(llvm::sys::path::parent_path(__FILE__)).str() + "/profiles";
#else
  std::string src = KILN_PROFILE_DIR;
#endif
  if (is_dir(src)) return src;
  // Installed: <prefix>/bin/kiln and <prefix>/share/kiln/profiles.
  static int anchor;
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, &anchor);
  if (!exe.empty()) {
    llvm::SmallString<256> p(llvm::sys::path::parent_path(llvm::sys::path::parent_path(exe)));
    llvm::sys::path::append(p, "share", "kiln", "profiles");
    if (is_dir(std::string(p))) return std::string(p);
  }
  return "";
}

std::vector<std::string> profile_names() {
  std::vector<std::string> names;
  std::string dir = profile_dir();
  std::error_code ec;
  if (!dir.empty())
    for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
      if (llvm::sys::path::extension(it->path()) == ".json")
        names.push_back(llvm::sys::path::stem(it->path()).str());
  if (std::find(names.begin(), names.end(), "host") == names.end()) names.push_back("host");
  std::sort(names.begin(), names.end());
  return names;
}

Result<TargetProfile> load_profile_file(const std::string& path) {
  KILN_ASSIGN(std::string text, read_file(path));
  llvm::Expected<llvm::json::Value> doc = llvm::json::parse(text);
  if (!doc) return make_error("{}: not valid JSON: {}", path, llvm::toString(doc.takeError()));
  const llvm::json::Object* o = doc->getAsObject();
  if (!o) return make_error("{}: expected a JSON object with the profile's fields", path);

  static const char* const kFields[] = {"name",    "description", "triple",           "cpu",
                                        "features", "threads",    "memory_budget_mb", "group_size",
                                        "vector_bits", "weight_prefetch"};
  for (auto& kv : *o) {
    llvm::StringRef k = kv.first;
    if (std::find_if(std::begin(kFields), std::end(kFields), [&](const char* f) { return k == f; }) ==
        std::end(kFields)) {
      std::string known;
      for (const char* f : kFields) known += (known.empty() ? "" : ", ") + std::string(f);
      return make_error("{}: unknown field '{}' (fields: {})", path, k.str(), known);
    }
  }
  auto bad = [&](const char* field, const char* expected) {
    return make_error("{}: field '{}': expected {}", path, field, expected);
  };
  auto str = [&](const char* field, bool required, std::string* out) -> Status {
    const llvm::json::Value* v = o->get(field);
    if (!v) return required ? make_error("{}: missing field '{}'", path, field) : Status::success();
    auto s = v->getAsString();
    if (!s || (required && s->empty())) return bad(field, "a non-empty string");
    *out = s->str();
    return Status::success();
  };
  // Integers may be "detect" where `detect` is given (it then fills them from the host).
  auto num = [&](const char* field, int64_t lo, int64_t hi, int64_t* out, bool* detect) -> Status {
    const llvm::json::Value* v = o->get(field);
    if (!v) return Status::success();  // keeps the default
    if (auto s = v->getAsString(); s && *s == "detect" && detect) { *detect = true; return Status::success(); }
    auto i = v->getAsInteger();
    if (!i || *i < lo || *i > hi)
      return make_error("{}: field '{}': expected an integer in [{}, {}]{}", path, field, lo, hi,
                        detect ? " or \"detect\"" : "");
    *out = *i;
    return Status::success();
  };

  TargetProfile p;
  p.source = path;
  KILN_TRY(str("name", true, &p.name));
  KILN_TRY(str("description", false, &p.description));
  KILN_TRY(str("triple", true, &p.triple));
  KILN_TRY(str("cpu", true, &p.cpu));
  // features: "+a,+b", or ["+a", "+b"], or "detect".
  if (const llvm::json::Value* v = o->get("features")) {
    std::vector<std::string> fs;
    if (auto s = v->getAsString()) {
      for (llvm::StringRef rest = *s; !rest.empty();) {
        auto [head, tail] = rest.split(',');
        if (!head.trim().empty()) fs.push_back(head.trim().str());
        rest = tail;
      }
    } else if (auto* a = v->getAsArray()) {
      for (auto& e : *a) {
        auto s = e.getAsString();
        if (!s) return bad("features", "a list of strings such as \"+neon\"");
        fs.push_back(s->str());
      }
    } else {
      return bad("features", "a list of strings such as \"+neon\", or \"detect\"");
    }
    for (auto& f : fs) {
      if (f == "detect" && fs.size() == 1) break;
      if (f.size() < 2 || (f[0] != '+' && f[0] != '-'))
        return make_error("{}: field 'features': '{}' must start with '+' or '-'", path, f);
      p.features += (p.features.empty() ? "" : ",") + f;
    }
    if (fs.size() == 1 && fs[0] == "detect") p.features = "detect";
  }
  bool threads_detect = false, vbits_detect = false;
  KILN_TRY(num("threads", 1, 256, &p.threads, &threads_detect));
  KILN_TRY(num("vector_bits", 64, 2048, &p.vector_bits, &vbits_detect));
  KILN_TRY(num("memory_budget_mb", 0, int64_t(1) << 30, &p.memory_budget_mb, nullptr));
  KILN_TRY(num("group_size", 1, 4096, &p.group_size, nullptr));
  if (p.group_size % 32 != 0)
    return make_error("{}: field 'group_size': {} is not a multiple of 32 (the quantized block size)", path,
                      p.group_size);

  std::string prefetch = weight_prefetch_name(p.weight_prefetch);
  KILN_TRY(str("weight_prefetch", false, &prefetch));
  // "detect": take the host's value, each field on its own.
  if (prefetch == "detect") p.weight_prefetch = host_weight_prefetch();
  else if (!parse_weight_prefetch(prefetch, &p.weight_prefetch))
    return bad("weight_prefetch", "\"non-temporal\", \"outer-cache\" or \"detect\"");
  if (p.triple == "detect" || p.cpu == "detect" || p.features == "detect" || threads_detect || vbits_detect) {
    TargetProfile host = host_profile();
    if (p.triple == "detect") p.triple = host.triple;
    if (p.cpu == "detect") p.cpu = host.cpu;
    if (p.features == "detect") p.features = host.features;
    if (threads_detect) p.threads = host.threads;
    if (vbits_detect) p.vector_bits = host.vector_bits;
  }

  // The triple and CPU must be ones LLVM 16 knows (an unknown CPU would otherwise only
  // print a warning and tune for nothing). Features are checked when the target machine
  // is made, and by tests/unit/profile_test.cpp for the shipped files.
  init_llvm_target_mcs();
  std::string err;
  const llvm::Target* t = llvm::TargetRegistry::lookupTarget(p.triple, err);
  if (!t) return make_error("{}: field 'triple': '{}': {}", path, p.triple, err);
  std::unique_ptr<llvm::MCSubtargetInfo> sti(t->createMCSubtargetInfo(p.triple, "", ""));
  if (!sti || !sti->isCPUStringValid(p.cpu))
    return make_error("{}: field 'cpu': LLVM 16 does not know CPU '{}' for {} (see `llc -mtriple={} -mcpu=help`)",
                      path, p.cpu, p.triple, p.triple);
  return p;
}

Result<TargetProfile> find_profile(const std::string& name) {
  bool is_path = name.find('/') != std::string::npos || llvm::StringRef(name).endswith(".json");
  if (is_path) {
    if (!llvm::sys::fs::exists(name)) return make_error("profile file '{}' does not exist", name);
    return load_profile_file(name);
  }
  std::string dir = profile_dir();
  std::string file = dir.empty() ? "" : dir + "/" + name + ".json";
  if (!file.empty() && llvm::sys::fs::exists(file)) {
    KILN_ASSIGN(TargetProfile p, load_profile_file(file));
    if (p.name != name) return make_error("{}: field 'name': '{}' differs from the file name '{}'", file, p.name, name);
    return p;
  }
  // Without a profile folder (kiln copied somewhere alone), host still works.
  if (name == "host") return host_profile();
  std::string known;
  for (auto& n : profile_names()) known += (known.empty() ? "" : ", ") + n;
  return make_error("unknown profile '{}' (known: {}; profiles are read from {})", name, known,
                    dir.empty() ? "nowhere: no profile folder found" : dir);
}

bool has_feature(const TargetProfile& p, std::string_view feature) {
  // As LLVM's subtarget for the profile sees it: what the CPU name implies counts (a
  // "haswell" profile with no feature list has AVX2), and "-x" in the list removes x. The
  // code generated for the profile uses exactly this set.
  // Lowering asks once per matmul: one subtarget per profile, made on first use.
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<llvm::MCSubtargetInfo>> subtargets;
  std::lock_guard<std::mutex> lock(mu);
  auto [it, fresh] = subtargets.try_emplace(p.triple + "|" + p.cpu + "|" + p.features);
  if (fresh) {
    init_llvm_target_mcs();
    std::string err;
    if (const llvm::Target* t = llvm::TargetRegistry::lookupTarget(p.triple, err))
      it->second.reset(t->createMCSubtargetInfo(p.triple, p.cpu, p.features));
  }
  if (it->second) return it->second->checkFeatures(std::string(feature));
  std::string_view s = p.features;  // no such target here: the list as written
  for (size_t i = 0; i <= s.size();) {
    size_t e = std::min(s.find(',', i), s.size());
    if (s.substr(i, e - i) == feature) return true;
    i = e + 1;
  }
  return false;
}

std::string checked_cpu_features(const TargetProfile& p) {
  const bool x86 = p.triple.rfind("x86_64", 0) == 0, arm = p.triple.rfind("aarch64", 0) == 0;
  std::string out;
  auto add = [&](std::string_view f) {
    if (has_feature(p, "+" + std::string(f))) out += (out.empty() ? "" : ",") + std::string(f);
  };
  if (x86)
    for (const X86Feature& f : kX86CheckedFeatures) add(f.name);
  if (arm)
    for (const Aarch64Feature& f : kAarch64CheckedFeatures) add(f.name);
  return out;
}

bool has_packed_kernels(const TargetProfile& p) {
  if (p.triple.rfind("x86_64", 0) == 0)
    return has_feature(p, "+avx512vnni") && has_feature(p, "+avx512vl") && has_feature(p, "+avx512bw");
  return p.triple.rfind("aarch64", 0) == 0 && has_feature(p, "+dotprod");
}

bool has_int8_kernels(const TargetProfile& p) {
  if (p.triple.rfind("x86_64", 0) == 0) return has_feature(p, "+avx2") || has_packed_kernels(p);
  return p.triple.rfind("aarch64", 0) == 0 && has_feature(p, "+dotprod");
}

}  // namespace kiln
