// tests/e2e/lora_test.cpp — LoRA adapters loaded at run time into the compiled default model.
//
// The oracle is the base model with the adapter merged into its weights (W + s * B @ A in
// float, tests/unit/merged_model.h), compiled without LoRA. Adapters are seeded random,
// written as PEFT folders (Hugging Face row order) and llama.cpp GGUF LoRA files (q/k rows
// permuted as the converter does, written here independently of the reader). Both
// artifacts use float activations, so the only difference left is where the low-rank
// term is added.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "frontend/adapter.h"
#include "frontend/gguf.h"
#include "frontend/gguf_names.h"
#include "frontend/gguf_writer.h"
#include "frontend/llama.h"
#include "frontend/lora_names.h"
#include "runtime/include/kiln/kiln.h"
#include "runtime/sampler.h"
#include "support/file.h"
#include "tests/e2e/artifacts.h"
#include "tests/unit/merged_model.h"

namespace kiln {
namespace {
namespace fs = std::filesystem;
namespace ln = lora_names;

// ---- seeded random adapters on the default model -------------------------------------------

struct Target {
  int64_t layer;
  int module;
  int64_t in, out;
  std::vector<float> a, b_hf;  // [r, in], [out, r] in Hugging Face row order
};

struct RandomAdapter {
  int64_t rank = 4;
  float alpha = 8.0f;
  std::vector<Target> targets;
};

struct Base {
  std::unique_ptr<GgufFile> file = std::move(GgufFile::open(KILN_DEFAULT_MODEL)).value();
  LlamaConfig cfg = read_llama_config(*file).value();
  int64_t n_head = cfg.n_head, n_head_kv = cfg.n_head_kv;
  std::pair<int64_t, int64_t> in_out(int64_t layer, int module) const {
    const GgufTensor* t = file->tensor(gguf_names::layer_tensor(ln::kModules[module].gguf, layer));
    return {(int64_t)t->ne[0], (int64_t)t->ne[1]};
  }
};

const Base& base() {
  static Base b;
  return b;
}

RandomAdapter random_adapter(const std::vector<std::pair<int64_t, int>>& where, int64_t rank, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  RandomAdapter ad;
  ad.rank = rank;
  ad.alpha = 2.0f * (float)rank;
  for (auto [l, m] : where) {
    auto [in, out] = base().in_out(l, m);
    Target t{l, m, in, out, std::vector<float>((size_t)(rank * in)), std::vector<float>((size_t)(out * rank))};
    for (auto& x : t.a) x = nd(rng) / std::sqrt((float)in);
    for (auto& x : t.b_hf) x = 0.05f * nd(rng);
    ad.targets.push_back(std::move(t));
  }
  return ad;
}

using testing::permute_like_converter;

std::vector<float> b_gguf(const Target& t, int64_t rank) {
  if (t.module == 0) return permute_like_converter(t.b_hf, t.out, rank, base().n_head);
  if (t.module == 1) return permute_like_converter(t.b_hf, t.out, rank, base().n_head_kv);
  return t.b_hf;
}

// The adapter in GGUF conventions, for the merged oracle (not through the readers).
LoraAdapter as_merge(const RandomAdapter& ad) {
  LoraAdapter m;
  m.rank = ad.rank;
  m.scale = ad.alpha / (float)ad.rank;
  for (const Target& t : ad.targets) {
    LoraTarget lt;
    lt.base_tensor = gguf_names::layer_tensor(ln::kModules[t.module].gguf, t.layer);
    lt.layer = t.layer, lt.module = t.module, lt.rank = ad.rank, lt.in = t.in, lt.out = t.out;
    lt.a = t.a;
    lt.b = b_gguf(t, ad.rank);
    m.targets.push_back(std::move(lt));
  }
  return m;
}

std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A PEFT folder: adapter_config.json and adapter_model.safetensors (f32).
void write_peft(const RandomAdapter& ad, const fs::path& dir) {
  fs::create_directories(dir);
  std::string header = "{", data;
  std::string targets;
  bool on[ln::kNumModules] = {};
  auto entry = [&](const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
    if (header.size() > 1) header += ",";
    header += fmt::format(R"("{}":{{"dtype":"F32","shape":[{},{}],"data_offsets":[{},{}]}})", name, shape[0], shape[1],
                          data.size(), data.size() + v.size() * 4);
    data += f32_bytes(v);
  };
  for (const Target& t : ad.targets) {
    std::string p = fmt::format("{}{}.{}", ln::kPeftPrefix, t.layer, ln::kModules[t.module].hf);
    entry(p + std::string(ln::kPeftA), {ad.rank, t.in}, t.a);
    entry(p + std::string(ln::kPeftB), {t.out, ad.rank}, t.b_hf);
    on[t.module] = true;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[i] = (char)((header.size() >> (8 * i)) & 0xff);
  ASSERT_TRUE(write_file_atomic((dir / "adapter_model.safetensors").string(), st + header + data).ok());
  for (int m = 0; m < ln::kNumModules; ++m)
    if (on[m]) targets += fmt::format("{}\"{}\"", targets.empty() ? "" : ",", ln::kModules[m].peft);
  std::string cfg = fmt::format(R"({{"peft_type":"LORA","r":{},"lora_alpha":{},"target_modules":[{}],"bias":"none",)"
                                R"("base_model_name_or_path":"HuggingFaceTB/SmolLM2-135M-Instruct"}})",
                                ad.rank, ad.alpha, targets);
  ASSERT_TRUE(write_file_atomic((dir / "adapter_config.json").string(), cfg).ok());
}

// A llama.cpp GGUF LoRA file.
void write_gguf(const RandomAdapter& ad, const fs::path& path) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.type", "adapter");
  w.add_string("adapter.type", "lora");
  w.add_f32("adapter.lora.alpha", ad.alpha);
  for (const Target& t : ad.targets) {
    std::string name = gguf_names::layer_tensor(ln::kModules[t.module].gguf, t.layer);
    w.add_tensor_f32(name + ".lora_a", DType::F32, {ad.rank, t.in}, t.a);
    w.add_tensor_f32(name + ".lora_b", DType::F32, {t.out, ad.rank}, b_gguf(t, ad.rank));
  }
  ASSERT_TRUE(write_file_atomic(path.string(), w.bytes()).ok());
}

// ---- artifacts ------------------------------------------------------------------------------

constexpr int kStreams = 3;

std::vector<std::pair<int64_t, int>> every_module_of_layer0_and_qv() {
  std::vector<std::pair<int64_t, int>> w;
  for (int m = 0; m < ln::kNumModules; ++m) w.push_back({0, m});
  for (int64_t l : {5, 17, 29}) w.push_back({l, 0}), w.push_back({l, 2});
  return w;
}
std::vector<std::pair<int64_t, int>> qv_of_every_layer() {
  std::vector<std::pair<int64_t, int>> w;
  for (int64_t l = 0; l < 30; ++l) w.push_back({l, 0}), w.push_back({l, 2});
  return w;
}

struct Fixture {
  fs::path dir = fs::temp_directory_path() / fmt::format("kiln-e2e-adapters-{}", ::getpid());
  RandomAdapter full = random_adapter(every_module_of_layer0_and_qv(), 4, 11);
  RandomAdapter qv = random_adapter(qv_of_every_layer(), 4, 12);
  RandomAdapter big = random_adapter({{0, 0}, {0, 2}}, 8, 13);
  std::string lora_dir, narrow_dir, merged_dir, plain_dir;

  Fixture() {
    fs::create_directories(dir);
    write_peft(full, dir / "full_peft");
    write_gguf(full, dir / "full.gguf");
    write_peft(qv, dir / "qv_peft");
    write_peft(big, dir / "rank8_peft");
    // f32 KV caches throughout: the checks hold two float computations of the same
    // logits to 2e-4, and an f16 cache would round their differences to half-ulp jumps.
    // Every target, R 16, three slots, three streams.
    CompileRequest req = testing::default_model_request("lora");
    req.kv_type = "f32";
    req.max_context = 256;
    req.max_streams = kStreams;
    req.int8_activations = false;
    req.lora_slots = 3;
    req.lora_rank = 16;
    lora_dir = compile(req);
    // q and v only, R 4 = the adapters' rank: the unpadded computation.
    CompileRequest n = testing::default_model_request("lora-r4");
    n.kv_type = "f32";
    n.max_context = 256;
    n.int8_activations = false;
    n.lora_slots = 2;
    n.lora_rank = 4;
    n.lora_targets = "q,v";
    narrow_dir = compile(n);
    // The oracle: `full` merged into the weights, no LoRA.
    auto bytes = testing::merged_model_gguf(*base().file, as_merge(full));
    EXPECT_TRUE(write_file_atomic((dir / "merged.gguf").string(), bytes).ok());
    CompileRequest m = testing::default_model_request("lora-merged");
    m.model_path = (dir / "merged.gguf").string();
    m.kv_type = "f32";
    m.max_context = 256;
    m.int8_activations = false;
    merged_dir = compile(m);
  }
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  static std::string compile(const CompileRequest& req) {
    auto sum = compile_model(req);
    EXPECT_TRUE(sum.ok()) << sum.error().message;
    return req.out_dir;
  }
};

Fixture& fx() {
  static Fixture* f = new Fixture();  // compiled once for every test of the file
  static bool cleanup = [] { std::atexit([] { delete f; }); return true; }();
  (void)cleanup;
  return *f;
}

std::unique_ptr<LoadedArtifact> open(const std::string& dir) {
  auto a = load_artifact(dir, 2);
  EXPECT_TRUE(a.ok()) << a.error().message;
  return a.ok() ? std::move(a).value() : nullptr;
}

std::vector<int32_t> tokenize(const LoadedArtifact& s, const std::string& text) {
  std::vector<int32_t> t(256);
  int32_t n = 0;
  EXPECT_EQ(kiln_tokenize(s.model, text.data(), text.size(), 1, 1, t.data(), (int32_t)t.size(), &n), KILN_OK);
  t.resize((size_t)n);
  return t;
}

// Logits after the prompt and after each of `feed` tokens, on stream 0 from empty.
std::vector<std::vector<float>> run(LoadedArtifact& s, const std::vector<int32_t>& prompt,
                                    const std::vector<int32_t>& feed) {
  std::vector<std::vector<float>> out;
  std::vector<float> l((size_t)s.n_vocab());
  EXPECT_EQ(kiln_session_reset(s.session, KILN_ALL_STREAMS), KILN_OK);
  EXPECT_EQ(kiln_prefill(s.session, prompt.data(), (int32_t)prompt.size(), 0, l.data()), KILN_OK) << kiln_last_error();
  out.push_back(l);
  int32_t zero = 0;
  for (int32_t t : feed) {
    EXPECT_EQ(kiln_decode(s.session, &t, &zero, 1, l.data()), KILN_OK) << kiln_last_error();
    out.push_back(l);
  }
  return out;
}

// max |a - b| / max |b|
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs((double)a[i] - b[i]));
    den = std::max(den, std::fabs((double)b[i]));
  }
  return den > 0 ? num / den : num;
}

const std::vector<int32_t> kFeed = {504, 3456, 28, 314, 1117};

std::string error_after(kiln_status st) {
  EXPECT_NE(st, KILN_OK);
  return kiln_last_error();
}

#define EXPECT_HAS(msg, sub) EXPECT_NE((msg).find(sub), std::string::npos) << "message: " << (msg)

// ---- tests ----------------------------------------------------------------------------------

// Done when: logits with an adapter loaded at run time equal the merged weights', for PEFT
// and GGUF adapters.
TEST(LoraE2E, RuntimeAdapterEqualsMergedWeights) {
  auto merged = open(fx().merged_dir);
  auto lora = open(fx().lora_dir);
  ASSERT_TRUE(merged && lora);
  EXPECT_EQ(kiln_model_lora_slots(lora->model), 3);
  EXPECT_EQ(kiln_model_lora_rank(lora->model), 16);
  auto prompt = tokenize(*lora, "The quick brown fox jumps over the lazy dog because");
  auto want = run(*merged, prompt, kFeed);
  auto plain = run(*lora, prompt, kFeed);  // slot 0: the base model
  double moved = 0;
  for (size_t i = 0; i < want.size(); ++i) moved = std::max(moved, rel_err(plain[i], want[i]));
  EXPECT_GT(moved, 0.02) << "the adapter barely changes the logits: the test would prove nothing";

  for (const char* which : {"full_peft", "full.gguf"}) {
    std::string path = (fx().dir / which).string();
    ASSERT_EQ(kiln_adapter_load(lora->session, path.c_str(), 1), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_stream_set_adapter(lora->session, 0, 1, 1.0f), KILN_OK) << kiln_last_error();
    kiln_adapter_info info;
    ASSERT_EQ(kiln_adapter_query(lora->session, 1, &info), KILN_OK);
    EXPECT_EQ(info.loaded, 1);
    EXPECT_EQ(info.rank, 4);
    EXPECT_EQ(info.n_targets, (int)fx().full.targets.size());
    EXPECT_FLOAT_EQ(info.scale, 2.0f);
    auto got = run(*lora, prompt, kFeed);
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_LT(rel_err(got[i], want[i]), 2e-4) << which << ", step " << i;
      EXPECT_EQ(Sampler::argmax(got[i]), Sampler::argmax(want[i])) << which << ", step " << i;
    }
    // Back to slot 0: the base again, bit for bit.
    ASSERT_EQ(kiln_stream_set_adapter(lora->session, 0, 0, 1.0f), KILN_OK);
    auto again = run(*lora, prompt, kFeed);
    EXPECT_EQ(again, plain) << which;
  }
}

// Done when: a rank below R gives the same result as an unpadded computation.
TEST(LoraE2E, RankBelowMaxEqualsUnpadded) {
  auto wide = open(fx().lora_dir);     // R 16
  auto narrow = open(fx().narrow_dir); // R 4 = the adapter's rank
  ASSERT_TRUE(wide && narrow);
  std::string path = (fx().dir / "qv_peft").string();
  for (auto* s : {wide.get(), narrow.get()}) {
    ASSERT_EQ(kiln_adapter_load(s->session, path.c_str(), 1), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_stream_set_adapter(s->session, 0, 1, 1.0f), KILN_OK);
  }
  auto prompt = tokenize(*wide, "Write a short poem about autumn leaves.");
  auto a = run(*wide, prompt, kFeed), b = run(*narrow, prompt, kFeed);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_LT(rel_err(a[i], b[i]), 1e-5) << "step " << i;
    EXPECT_EQ(Sampler::argmax(a[i]), Sampler::argmax(b[i]));
  }
}

// Done when: S streams with different adapters in one pass give the tokens of S single runs.
TEST(LoraE2E, StreamsWithDifferentAdaptersEqualSeparateRuns) {
  auto s = open(fx().lora_dir);
  ASSERT_TRUE(s);
  ASSERT_EQ(kiln_adapter_load(s->session, (fx().dir / "full.gguf").c_str(), 1), KILN_OK) << kiln_last_error();
  ASSERT_EQ(kiln_adapter_load(s->session, (fx().dir / "qv_peft").c_str(), 2), KILN_OK) << kiln_last_error();
  const int32_t slot_of[kStreams] = {0, 1, 2};
  const float scale_of[kStreams] = {1.0f, 1.0f, 3.0f};
  auto prompt = tokenize(*s, "Tell me about the moon.");
  const int steps = 20;
  const size_t V = (size_t)s->n_vocab();
  std::vector<float> logits(V * kStreams);

  std::vector<std::vector<int32_t>> alone(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
    ASSERT_EQ(kiln_stream_set_adapter(s->session, 0, slot_of[i], scale_of[i]), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_prefill(s->session, prompt.data(), (int32_t)prompt.size(), 0, logits.data()), KILN_OK);
    int32_t zero = 0;
    for (int k = 0; k < steps; ++k) {
      int32_t next = Sampler::argmax({logits.data(), V});
      alone[(size_t)i].push_back(next);
      ASSERT_EQ(kiln_decode(s->session, &next, &zero, 1, logits.data()), KILN_OK) << kiln_last_error();
    }
  }
  EXPECT_NE(alone[0], alone[1]);
  EXPECT_NE(alone[0], alone[2]);

  // Together: the prompt prefilled once on stream 0 (no adapter), copied, then every stream
  // decodes with its own adapter in one step per token. The prompt's KV must then come from
  // each stream's adapter, so each stream prefills its last prompt token itself.
  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  std::vector<int32_t> streams = {0, 1, 2}, next(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_stream_set_adapter(s->session, i, slot_of[i], scale_of[i]), KILN_OK) << kiln_last_error();
    ASSERT_EQ(kiln_prefill(s->session, prompt.data(), (int32_t)prompt.size(), i, logits.data() + V * i), KILN_OK);
  }
  std::vector<std::vector<int32_t>> together(kStreams);
  for (int k = 0; k < steps; ++k) {
    for (int i = 0; i < kStreams; ++i) {
      next[(size_t)i] = Sampler::argmax({logits.data() + V * i, V});
      together[(size_t)i].push_back(next[(size_t)i]);
    }
    ASSERT_EQ(kiln_decode(s->session, next.data(), streams.data(), kStreams, logits.data()), KILN_OK);
  }
  for (int i = 0; i < kStreams; ++i) EXPECT_EQ(together[(size_t)i], alone[(size_t)i]) << "stream " << i;
  // Two streams on one slot must share its scale.
  EXPECT_HAS(error_after(kiln_stream_set_adapter(s->session, 0, 2, 1.0f)), "load the adapter into a second slot");
}

// Done when: bad adapters give a clear error naming the file and tensor, and the session
// stays usable (the slot keeps what it held).
TEST(LoraE2E, BadAdaptersFailClearlyAndTheSessionStaysUsable) {
  auto s = open(fx().narrow_dir);  // q, v; R 4
  ASSERT_TRUE(s);
  std::string qv = (fx().dir / "qv_peft").string();
  ASSERT_EQ(kiln_adapter_load(s->session, qv.c_str(), 1), KILN_OK) << kiln_last_error();
  ASSERT_EQ(kiln_stream_set_adapter(s->session, 0, 1, 1.0f), KILN_OK);
  auto prompt = tokenize(*s, "Hello there");
  auto before = run(*s, prompt, {});

  // Rank above the compiled R.
  std::string m = error_after(kiln_adapter_load(s->session, (fx().dir / "rank8_peft").c_str(), 1));
  EXPECT_HAS(m, "rank 8 is above the maximum rank 4");
  EXPECT_HAS(m, "lora_A.weight");
  EXPECT_HAS(m, "adapter_model.safetensors");
  // A target the model was not compiled for.
  m = error_after(kiln_adapter_load(s->session, (fx().dir / "full.gguf").c_str(), 1));
  EXPECT_HAS(m, "full.gguf");
  EXPECT_HAS(m, "--lora-targets=q,v");
  // Another base's dims: a GGUF adapter whose A has 64 inputs.
  {
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_string("general.type", "adapter");
    w.add_string("adapter.type", "lora");
    w.add_f32("adapter.lora.alpha", 8.0f);
    w.add_tensor_f32("blk.0.attn_q.weight.lora_a", DType::F32, {4, 64}, std::vector<float>(256, 0.1f));
    w.add_tensor_f32("blk.0.attn_q.weight.lora_b", DType::F32, {64, 4}, std::vector<float>(256, 0.1f));
    ASSERT_TRUE(write_file_atomic((fx().dir / "other_base.gguf").string(), w.bytes()).ok());
  }
  m = error_after(kiln_adapter_load(s->session, (fx().dir / "other_base.gguf").c_str(), 1));
  EXPECT_HAS(m, "blk.0.attn_q.weight.lora_a");
  EXPECT_HAS(m, "another base");
  // Corrupt bytes: a truncated safetensors file, an f64 tensor, garbage, a missing path.
  {
    fs::create_directories(fx().dir / "broken");
    auto st = read_file(qv + "/adapter_model.safetensors");
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(write_file_atomic((fx().dir / "broken/adapter_model.safetensors").string(), st->substr(0, st->size() / 2)).ok());
    fs::copy_file(qv + "/adapter_config.json", fx().dir / "broken/adapter_config.json", fs::copy_options::overwrite_existing);
  }
  m = error_after(kiln_adapter_load(s->session, (fx().dir / "broken").c_str(), 1));
  EXPECT_HAS(m, "adapter_model.safetensors");
  ASSERT_TRUE(write_file_atomic((fx().dir / "garbage.gguf").string(), std::string(1000, 'x')).ok());
  m = error_after(kiln_adapter_load(s->session, (fx().dir / "garbage.gguf").c_str(), 1));
  EXPECT_HAS(m, "garbage.gguf");
  EXPECT_EQ(kiln_adapter_load(s->session, (fx().dir / "missing").c_str(), 1), KILN_ERR_IO);  // unreadable: I/O
  EXPECT_HAS(std::string(kiln_last_error()), "missing");
  EXPECT_EQ(kiln_adapter_load(s->session, "/dev/null", 1), KILN_ERR_IO);
  // A scale that would overflow the side path to inf/NaN logits: from the config...
  {
    fs::create_directories(fx().dir / "huge_alpha");
    fs::copy_file(qv + "/adapter_model.safetensors", fx().dir / "huge_alpha/adapter_model.safetensors",
                  fs::copy_options::overwrite_existing);
    auto cfg = read_file(qv + "/adapter_config.json");
    ASSERT_TRUE(cfg.ok());
    std::string text = *cfg;
    const size_t at = text.find("\"lora_alpha\"");
    ASSERT_NE(at, std::string::npos);
    const size_t colon = text.find(':', at), end = text.find_first_of(",}", colon);
    text.replace(colon + 1, end - colon - 1, " 1e30");
    ASSERT_TRUE(write_file_atomic((fx().dir / "huge_alpha/adapter_config.json").string(), text).ok());
  }
  m = error_after(kiln_adapter_load(s->session, (fx().dir / "huge_alpha").c_str(), 1));
  EXPECT_HAS(m, "huge_alpha");
  EXPECT_HAS(m, "lora_alpha / r");
  // ...or from the stream's multiplier.
  EXPECT_HAS(error_after(kiln_stream_set_adapter(s->session, 0, 1, 3e38f)), "beyond");
  // Factors each in range whose products overflow: the adapter loads, the step's logits
  // hold NaN, and choosing a token from them is refused (greedy and sampled), not made
  // silently from garbage.
  {
    RandomAdapter huge = fx().qv;
    for (Target& t : huge.targets)
      for (float& x : t.b_hf) x = x >= 0 ? 3e38f : -3e38f;
    write_peft(huge, fx().dir / "huge_factors");
  }
  ASSERT_EQ(kiln_adapter_load(s->session, (fx().dir / "huge_factors").c_str(), 1), KILN_OK) << kiln_last_error();
  {
    const auto logits = run(*s, prompt, {}).back();
    kiln_sampler_params hot = kiln_sampler_default_params();
    hot.temperature = 0.7f;
    for (const kiln_sampler_params* p : {(const kiln_sampler_params*)nullptr, (const kiln_sampler_params*)&hot}) {
      kiln_sampler* smp = nullptr;
      ASSERT_EQ(kiln_sampler_init(p, &smp), KILN_OK);
      int32_t id = -1;
      EXPECT_EQ(kiln_sampler_sample(smp, logits.data(), (int32_t)logits.size(), &id), KILN_ERR_NOT_FINITE);
      EXPECT_HAS(std::string(kiln_last_error()), "too large for the model");
      EXPECT_EQ(id, -1);
      kiln_sampler_free(smp);
    }
  }
  ASSERT_EQ(kiln_adapter_load(s->session, qv.c_str(), 1), KILN_OK) << kiln_last_error();
  // Bad slots and streams.
  EXPECT_HAS(error_after(kiln_adapter_load(s->session, qv.c_str(), 0)), "slot 0 is the zero adapter");
  EXPECT_HAS(error_after(kiln_adapter_load(s->session, qv.c_str(), 2)), "slot 2 is out of range");
  EXPECT_HAS(error_after(kiln_stream_set_adapter(s->session, 5, 1, 1.0f)), "stream 5");
  EXPECT_EQ(kiln_stream_adapter(s->session, 0), 1);

  // The slot still holds the good adapter and the session runs as before.
  auto after = run(*s, prompt, {});
  EXPECT_EQ(after, before);
  // Freeing the slot returns its streams to the base model.
  ASSERT_EQ(kiln_adapter_free(s->session, 1), KILN_OK);
  EXPECT_EQ(kiln_stream_adapter(s->session, 0), 0);
  EXPECT_HAS(error_after(kiln_stream_set_adapter(s->session, 0, 1, 1.0f)), "holds no adapter");
}

// A model compiled without LoRA refuses adapters with a message that says how to compile.
// The base entry (ABI 6): a LoRA build with int8 activations (the fusions and packing of
// a default compile) runs the step without side paths when no row has an adapter. Its
// logits are the bits of the same model compiled without LoRA, and of the LoRA step
// itself on a row whose adapter contributes nothing (slot 1 at scale 0: that row takes
// the `step` entry and its lora_add copies the projection).
TEST(LoraE2E, ZeroAdapterRunsTheBaseEntryWithTheBitsOfABuildWithoutLora) {
  const fs::path dir = fx().dir / "base-entry";
  CompileRequest with = testing::default_model_request("lora-int8");
  with.out_dir = (dir / "lora").string();
  with.max_context = 256;
  with.lora_slots = 2;
  CompileRequest without = with;
  without.out_dir = (dir / "plain").string();
  without.lora_slots = 0;
  Fixture::compile(with);
  Fixture::compile(without);
  auto l = open(with.out_dir), p = open(without.out_dir);
  ASSERT_TRUE(l && p);
  ASSERT_NE(l->code->model()->step_base, nullptr);
  EXPECT_EQ(p->code->model()->step_base, nullptr);
  const auto prompt = tokenize(*l, "The quick brown fox jumps over the lazy dog because");
  const auto base = run(*l, prompt, kFeed), plain = run(*p, prompt, kFeed);
  ASSERT_EQ(base.size(), plain.size());
  for (size_t i = 0; i < base.size(); ++i)
    EXPECT_EQ(std::memcmp(base[i].data(), plain[i].data(), base[i].size() * 4), 0) << "step " << i;
  ASSERT_EQ(kiln_adapter_load(l->session, (fx().dir / "qv_peft").c_str(), 1), KILN_OK) << kiln_last_error();
  ASSERT_EQ(kiln_stream_set_adapter(l->session, 0, 1, 0.0f), KILN_OK) << kiln_last_error();
  const auto scaled0 = run(*l, prompt, kFeed);
  for (size_t i = 0; i < base.size(); ++i)
    EXPECT_EQ(std::memcmp(base[i].data(), scaled0[i].data(), base[i].size() * 4), 0) << "step " << i;
  // And an adapter at its own scale still changes the output (the step entry runs).
  ASSERT_EQ(kiln_stream_set_adapter(l->session, 0, 1, 1.0f), KILN_OK) << kiln_last_error();
  EXPECT_GT(rel_err(run(*l, prompt, kFeed).back(), base.back()), 1e-4);
}

TEST(LoraE2E, ModelWithoutLoraSaysHowToCompile) {
  auto s = open(fx().merged_dir);
  ASSERT_TRUE(s);
  EXPECT_EQ(kiln_model_lora_slots(s->model), 0);
  std::string m = error_after(kiln_adapter_load(s->session, (fx().dir / "qv_peft").c_str(), 1));
  EXPECT_HAS(m, "--lora-slots");
}

}  // namespace
}  // namespace kiln
