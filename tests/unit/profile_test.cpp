// tests/unit/profile_test.cpp — target profiles (profiles/*.json, codegen/target.cpp).
//
// Every shipped profile is read, makes an LLVM target machine without a warning (an
// unknown CPU or feature is only a warning in LLVM), and compiles a tiny LLaMA to an
// object of its architecture (ELF e_machine). AArch64 profiles must give NEON code and no
// SVE (Snapdragon parts do not enable SVE). Broken files give errors naming file and field.
#include <gtest/gtest.h>

#include <algorithm>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "codegen/codegen.h"
#include "codegen/target.h"
#include "runtime/cpu_features.h"
#include "frontend/llama.h"
#include "tests/unit/step_runner.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

constexpr uint16_t kEmX86_64 = 62, kEmAArch64 = 183;

uint16_t elf_machine(const std::string& obj) {
  if (obj.size() < 20 || std::memcmp(obj.data(), "\x7f" "ELF", 4) != 0) return 0;
  uint16_t m;
  std::memcpy(&m, obj.data() + 18, 2);  // little-endian targets only (both are)
  return m;
}

// A tiny LLaMA lowered and planned for the backend.
struct TinyGraph {
  std::string bytes = testing::tiny_llama_gguf();
  Graph g{"tiny"};
  TinyGraph() {
    auto f = GgufFile::parse(MappedFile::borrow(bytes.data(), bytes.size(), "tiny.gguf"));
    EXPECT_TRUE(f.ok());
    std::shared_ptr<const GgufFile> file(std::move(f).value());
    auto cfg = read_llama_config(*file);
    EXPECT_TRUE(cfg.ok());
    auto lowered = build_llama_graph(file, *cfg, {.max_context = 32, .max_streams = 1});
    EXPECT_TRUE(lowered.ok()) << lowered.error().message;
    g = std::move(lowered).value();
    Status s = testing::plan_for_codegen(g, 8, 2);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  }
};

TEST(Profiles, TheFourShippedProfilesAreListed) {
  auto names = profile_names();
  for (const char* n : {"host", "x86-64-v3", "sm8650", "sm8750"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n << " missing from " << profile_dir();
}

TEST(Profiles, EveryProfileCompilesATinyModelForItsArchitecture) {
  TinyGraph tiny;
  for (const std::string& name : profile_names()) {
    SCOPED_TRACE(name);
    auto p = find_profile(name);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(p->name, name);
    EXPECT_FALSE(p->triple.empty() || p->cpu.empty() || p->triple == "detect" || p->cpu == "detect");
    EXPECT_GE(p->threads, 1);
    EXPECT_EQ(p->group_size % 32, 0);
    CodegenOptions opts;
    opts.want_assembly = true;
    ::testing::internal::CaptureStderr();
    auto code = compile_graph(tiny.g, *p, opts);
    std::string warnings = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(code.ok()) << code.error().message;
    EXPECT_EQ(warnings, "") << "LLVM warned about the profile's cpu or features";
    bool arm = p->triple.rfind("aarch64", 0) == 0;
    EXPECT_EQ(elf_machine(code->object), arm ? kEmAArch64 : kEmX86_64);
    if (arm) {
      const std::string& s = code->assembly;
      EXPECT_NE(s.find("fmla\tv"), std::string::npos) << "no NEON fmla in the AArch64 code";
      EXPECT_EQ(s.find("ptrue"), std::string::npos) << "SVE code for an SoC without SVE";
    } else if (p->cpu == "x86-64-v3") {
      EXPECT_NE(code->assembly.find("vfmadd"), std::string::npos) << "no FMA in x86-64-v3 code";
    }
  }
}

// Every instruction-set extension a shipped profile names is one kiln_model_load checks on
// the running CPU (runtime/cpu_features.h), or the architecture's baseline: otherwise an
// artifact for it could still die on SIGILL on a core without it.
TEST(Profiles, EveryExtensionAProfileNamesIsCheckedAtLoad) {
  for (const std::string& name : profile_names()) {
    if (name == "host") continue;  // detected: whatever this machine has
    SCOPED_TRACE(name);
    auto p = find_profile(name);
    ASSERT_TRUE(p.ok()) << p.error().message;
    const bool x86 = p->triple.rfind("x86_64", 0) == 0;
    std::vector<std::string_view> checked;
    if (x86)
      for (const X86Feature& f : kX86CheckedFeatures) checked.push_back(f.name);
    else
      for (const Aarch64Feature& f : kAarch64CheckedFeatures) checked.push_back(f.name);
    const std::vector<std::string_view> baseline = x86 ? std::vector<std::string_view>{"sse", "sse2", "x87", "cx8"}
                                                       : std::vector<std::string_view>{"neon", "fp-armv8"};
    std::string_view list = p->features;
    while (!list.empty()) {
      const size_t comma = list.find(',');
      std::string_view f = list.substr(0, comma);
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      if (f.empty() || f[0] != '+') continue;  // removals need no check
      f.remove_prefix(1);
      EXPECT_TRUE(std::find(checked.begin(), checked.end(), f) != checked.end() ||
                  std::find(baseline.begin(), baseline.end(), f) != baseline.end())
          << "+" << f << " is neither checked at load nor baseline";
    }
  }
}

TEST(Profiles, NoProfileMeansHost) {
  auto p = find_profile("host");
  ASSERT_TRUE(p.ok()) << p.error().message;
  TargetProfile h = host_profile();
  EXPECT_EQ(p->triple, h.triple);
  EXPECT_EQ(p->cpu, h.cpu);
  EXPECT_EQ(p->features, h.features);
  EXPECT_EQ(p->weight_prefetch, h.weight_prefetch);  // host.json: "detect"
  // The host's kind follows its CPU vendor (codegen/target.cpp, docs/profiles.md).
  EXPECT_EQ(h.weight_prefetch, cpu_vendor() == "GenuineIntel" ? WeightPrefetch::OuterCache : WeightPrefetch::NonTemporal);
}

TEST(Profiles, WeightPrefetchSpellingsRoundTrip) {
  for (WeightPrefetch w : {WeightPrefetch::NonTemporal, WeightPrefetch::OuterCache}) {
    WeightPrefetch back = w == WeightPrefetch::OuterCache ? WeightPrefetch::NonTemporal : WeightPrefetch::OuterCache;
    EXPECT_TRUE(parse_weight_prefetch(weight_prefetch_name(w), &back));
    EXPECT_EQ(back, w);
  }
  WeightPrefetch untouched = WeightPrefetch::OuterCache;
  EXPECT_FALSE(parse_weight_prefetch("detect", &untouched));  // resolved by the reader, not a kind
  EXPECT_FALSE(parse_weight_prefetch("nta", &untouched));
  EXPECT_EQ(untouched, WeightPrefetch::OuterCache);
}

TEST(Profiles, PhoneProfilesAsDocumented) {
  for (const char* n : {"sm8650", "sm8750"}) {
    auto p = find_profile(n);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(p->triple, "aarch64-unknown-linux-gnu");
    for (const char* f : {"+neon", "+dotprod", "+i8mm", "+fullfp16", "+fp16fml", "-sve"})
      EXPECT_NE(p->features.find(f), std::string::npos) << n << " lacks " << f;
    EXPECT_EQ(p->threads, 8);
    EXPECT_EQ(p->vector_bits, 128);
    EXPECT_GT(p->memory_budget_mb, 0);
    EXPECT_EQ(p->weight_prefetch, WeightPrefetch::NonTemporal);  // the phones' streaming PRFM
  }
}

class ProfileFiles : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("kiln_profile_test_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write(const std::string& name, const std::string& text) {
    auto p = (dir / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::string error_of(const std::string& path) {
    auto p = find_profile(path);
    return p.ok() ? "(no error)" : p.error().message;
  }
};

TEST_F(ProfileFiles, AProfileFileByPath) {
  auto path = write("board.json", R"({"name": "board", "triple": "aarch64-unknown-linux-gnu",
      "cpu": "cortex-a55", "features": "+neon,+dotprod", "threads": 4, "group_size": 64})");
  auto p = find_profile(path);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->name, "board");
  EXPECT_EQ(p->cpu, "cortex-a55");
  EXPECT_EQ(p->features, "+neon,+dotprod");
  EXPECT_EQ(p->threads, 4);
  EXPECT_EQ(p->group_size, 64);
  EXPECT_EQ(p->source, path);
}

TEST_F(ProfileFiles, ErrorsNameTheFileAndField) {
  struct Case { const char* text; const char* expect; };
  const Case cases[] = {
      {"{\"name\": \"b\",", "not valid JSON"},
      {"[1]", "expected a JSON object"},
      {R"({"name": "b", "cpu": "cortex-a55"})", "missing field 'triple'"},
      {R"({"name": "b", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a55", "thread": 4})",
       "unknown field 'thread'"},
      {R"({"name": "b", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-x9"})",
       "field 'cpu': LLVM 16 does not know CPU 'cortex-x9'"},
      {R"({"name": "b", "triple": "nonsense-cpu-os", "cpu": "x"})", "field 'triple'"},
      {R"({"name": "b", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a55", "threads": 0})",
       "field 'threads': expected an integer in [1, 256] or \"detect\""},
      {R"({"name": "b", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a55", "features": "neon"})",
       "field 'features': 'neon' must start with '+' or '-'"},
      {R"({"name": "b", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a55", "features": [1]})",
       "field 'features'"},
      {R"({"name": "b", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a55", "group_size": 48})",
       "field 'group_size': 48 is not a multiple of 32"},
  };
  int i = 0;
  for (const Case& c : cases) {
    std::string path = write("bad" + std::to_string(i++) + ".json", c.text);
    std::string e = error_of(path);
    EXPECT_NE(e.find(path), std::string::npos) << "error does not name the file: " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << e;
  }
  EXPECT_NE(error_of((dir / "missing.json").string()).find("does not exist"), std::string::npos);
  EXPECT_NE(error_of("no-such-profile").find("unknown profile 'no-such-profile' (known: host"), std::string::npos)
      << error_of("no-such-profile");
}

}  // namespace
}  // namespace kiln
