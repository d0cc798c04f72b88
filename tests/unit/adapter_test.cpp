// tests/unit/adapter_test.cpp — the safetensors reader and the LoRA adapter frontend on
// seeded random adapters written in both formats for the tiny model, hostile bytes, and
// every validation error.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "frontend/adapter.h"
#include "frontend/gguf_writer.h"
#include "frontend/lora_names.h"
#include "frontend/safetensors.h"
#include "support/half.h"
#include "tests/unit/merged_model.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// ---- safetensors bytes ---------------------------------------------------------------

struct StEntry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string data;
};

std::string st_bytes(const std::vector<StEntry>& entries, const std::string& metadata_json = "") {
  std::string header = "{", data;
  if (!metadata_json.empty()) header += "\"__metadata__\":" + metadata_json;
  for (const auto& e : entries) {
    if (header.size() > 1) header += ",";
    std::string shape;
    for (size_t i = 0; i < e.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(e.shape[i]);
    header += fmt::format("\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", e.name, e.dtype, shape,
                          data.size(), data.size() + e.data.size());
    data += e.data;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = (char)((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string f16_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h = f32_to_fp16(v[i]);
    std::memcpy(&s[2 * i], &h, 2);
  }
  return s;
}
std::string bf16_bytes(const std::vector<float>& v) {  // truncation is exact for the test's check
  std::string s(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h = (uint16_t)(f32_to_bits(v[i]) >> 16);
    std::memcpy(&s[2 * i], &h, 2);
  }
  return s;
}

Result<std::unique_ptr<SafetensorsFile>> parse_st(const std::string& b) {
  return SafetensorsFile::parse(MappedFile::borrow(b.data(), b.size(), "test.safetensors"));
}

// ---- a seeded random adapter in Hugging Face order ------------------------------------

struct HfTarget {
  int64_t layer;
  int module;  // index into lora_names::kModules
  std::vector<float> a, b;  // [r, in], [out, r] in HF row order
  int64_t in, out;
};

struct Fixture {
  testing::TinyLlamaSpec spec{.vocab = 32, .embd = 64, .layers = 2, .heads = 4, .kv_heads = 2, .ff = 96};
  std::string base_bytes = testing::tiny_llama_gguf(spec);
  std::unique_ptr<GgufFile> base = std::move(
      GgufFile::parse(MappedFile::borrow(base_bytes.data(), base_bytes.size(), "tiny.gguf"))).value();
  LlamaConfig cfg = read_llama_config(*base).value();

  std::pair<int64_t, int64_t> dims(int module) const {  // (out, in) of a module
    const int64_t e = spec.embd, kv = spec.kv_heads * (spec.embd / spec.heads), ff = spec.ff;
    switch (module) {
      case 0: return {e, e};
      case 1: case 2: return {kv, e};
      case 3: return {e, e};
      case 4: case 5: return {ff, e};
      default: return {e, ff};
    }
  }

  std::vector<HfTarget> random_targets(int64_t rank, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    std::vector<HfTarget> ts;
    for (int64_t l = 0; l < spec.layers; ++l)
      for (int m = 0; m < 7; ++m) {
        if (l == 1 && m >= 4) continue;  // layer 1: attention only
        auto [out, in] = dims(m);
        HfTarget t{l, m, std::vector<float>((size_t)(rank * in)), std::vector<float>((size_t)(out * rank)), in, out};
        for (auto& x : t.a) x = nd(rng);
        for (auto& x : t.b) x = nd(rng);
        ts.push_back(std::move(t));
      }
    return ts;
  }
};

std::string peft_name(const HfTarget& t, bool a) {
  return fmt::format("{}{}.{}{}", lora_names::kPeftPrefix, t.layer, lora_names::kModules[t.module].hf,
                     a ? lora_names::kPeftA : lora_names::kPeftB);
}

std::vector<StEntry> peft_entries(const std::vector<HfTarget>& ts, int64_t rank, const std::string& dtype = "F32") {
  auto enc = [&](const std::vector<float>& v) {
    return dtype == "F16" ? f16_bytes(v) : dtype == "BF16" ? bf16_bytes(v) : f32_bytes(v);
  };
  std::vector<StEntry> es;
  for (const auto& t : ts) {
    es.push_back({peft_name(t, true), dtype, {rank, t.in}, enc(t.a)});
    es.push_back({peft_name(t, false), dtype, {t.out, rank}, enc(t.b)});
  }
  return es;
}

std::string peft_config(int64_t rank, double alpha, bool rslora = false,
                        const std::string& targets =
                            R"(["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"])") {
  return fmt::format(R"({{"peft_type":"LORA","r":{},"lora_alpha":{},"target_modules":{},"use_rslora":{},)"
                     R"("fan_in_fan_out":false,"bias":"none","modules_to_save":null,"base_model_name_or_path":"tiny"}})",
                     rank, alpha, targets, rslora ? "true" : "false");
}

using testing::permute_like_converter;

// The same adapter as llama.cpp's convert_lora_to_gguf.py writes it: q/k B rows permuted.
std::string gguf_adapter(const Fixture& fx, const std::vector<HfTarget>& ts, int64_t rank, float alpha,
                         DType type = DType::F32) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.type", "adapter");
  w.add_string("adapter.type", "lora");
  w.add_f32("adapter.lora.alpha", alpha);
  for (const auto& t : ts) {
    std::string base = gguf_names::layer_tensor(lora_names::kModules[t.module].gguf, t.layer);
    std::vector<float> b = t.b;
    if (t.module == 0) b = permute_like_converter(b, t.out, rank, fx.cfg.n_head);
    if (t.module == 1) b = permute_like_converter(b, t.out, rank, fx.cfg.n_head_kv);
    w.add_tensor_f32(base + ".lora_a", type, {rank, t.in}, t.a);
    w.add_tensor_f32(base + ".lora_b", type, {t.out, rank}, b);
  }
  return w.bytes();
}

Result<LoraAdapter> load_gguf_bytes(const Fixture& fx, const std::string& bytes, LoraOptions opts = {}) {
  auto f = GgufFile::parse(MappedFile::borrow(bytes.data(), bytes.size(), "lora.gguf"));
  if (!f.ok()) return f.error();
  return lora_from_gguf(**f, fx.cfg, *fx.base, opts);
}

Result<LoraAdapter> load_peft_bytes(const Fixture& fx, const std::string& config, const std::string& st,
                                    LoraOptions opts = {}) {
  auto f = SafetensorsFile::parse(MappedFile::borrow(st.data(), st.size(), "peft/adapter_model.safetensors"));
  if (!f.ok()) return f.error();
  return lora_from_peft(config, "peft/adapter_config.json", **f, fx.cfg, *fx.base, opts);
}

std::string error_of(const Result<LoraAdapter>& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message;
}

#define EXPECT_HAS(msg, sub) EXPECT_NE((msg).find(sub), std::string::npos) << "message: " << (msg)

// A fresh folder under the system temp dir, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / fmt::format("kiln_adapter_test_{}_{}", getpid(), n++);
    fs::create_directories(path);
  }
  ~TempDir() { std::error_code ec; fs::remove_all(path, ec); }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
  }
};

// ---- safetensors reader --------------------------------------------------------------

TEST(Safetensors, ReadsF32F16Bf16AndMetadata) {
  std::vector<float> v = {1.0f, -2.5f, 0.125f, 3.0f, 1024.0f, -0.0f};
  std::string b = st_bytes({{"x", "F32", {2, 3}, f32_bytes(v)},
                            {"h", "F16", {6}, f16_bytes(v)},
                            {"bf", "BF16", {3, 2}, bf16_bytes(v)},
                            {"empty", "F32", {0, 4}, ""}},
                           R"({"format":"pt"})");
  auto r = parse_st(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const SafetensorsFile& f = **r;
  EXPECT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const StTensor* x = f.tensor("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->shape, (std::vector<int64_t>{2, 3}));
  for (const char* n : {"x", "h", "bf"}) EXPECT_EQ(*f.to_f32(*f.tensor(n)), v) << n;
  EXPECT_TRUE(f.to_f32(*f.tensor("empty"))->empty());
  EXPECT_EQ(f.tensor("nope"), nullptr);
}

TEST(Safetensors, OtherDtypesParseButDoNotConvert) {
  auto r = parse_st(st_bytes({{"ids", "I64", {2}, std::string(16, '\0')}}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto v = (*r)->to_f32(*(*r)->tensor("ids"));
  ASSERT_FALSE(v.ok());
  EXPECT_HAS(v.error().message, "test.safetensors: tensor 'ids': dtype I64 is not supported");
}

TEST(Safetensors, EveryTruncationIsAnError) {
  std::string b = st_bytes({{"a", "F32", {2, 2}, f32_bytes({1, 2, 3, 4})}, {"b", "F16", {3}, f16_bytes({1, 2, 3})}});
  ASSERT_TRUE(parse_st(b).ok());
  for (size_t n = 0; n < b.size(); ++n) EXPECT_FALSE(parse_st(b.substr(0, n)).ok()) << n;
}

TEST(Safetensors, HostileHeadersGiveErrorsNamingTheTensor) {
  auto err = [](const std::string& header, const std::string& data = std::string(16, '\0')) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = (char)((n >> (8 * i)) & 0xff);
    auto r = parse_st(out + header + data);
    EXPECT_FALSE(r.ok()) << header;
    return r.ok() ? std::string() : r.error().message;
  };
  auto t = [](const std::string& body) { return "{\"t\":{" + body + "}}"; };
  EXPECT_HAS(err(t(R"("dtype":"F32","shape":[2],"data_offsets":[0,12])")), "tensor 't': data_offsets [0, 12] hold 12 bytes");
  EXPECT_HAS(err(t(R"("dtype":"F32","shape":[8],"data_offsets":[0,32])")), "run past the data section");
  EXPECT_HAS(err(t(R"("dtype":"F32","shape":[2],"data_offsets":[8,0])")), "end before they begin");
  EXPECT_HAS(err(t(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])")), "not a non-negative integer");
  EXPECT_HAS(err(t(R"("dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8])")),
             "more than");
  EXPECT_HAS(err(t(R"("dtype":"Q4","shape":[2],"data_offsets":[0,8])")), "unknown dtype 'Q4'");
  EXPECT_HAS(err(t(R"("shape":[2],"data_offsets":[0,8])")), "missing string 'dtype'");
  EXPECT_HAS(err(t(R"("dtype":"F32","shape":[2],"data_offsets":[0])")), "'data_offsets' is not an array of two");
  EXPECT_HAS(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"),
             "overlaps");
  EXPECT_HAS(err(R"({"__metadata__":{"k":1}})"), "'__metadata__' value for 'k' is not a string");
  EXPECT_HAS(err("[1,2]"), "not a JSON object");
  {  // A repeated name is an error, whichever way the JSON parser reports it.
    auto r = parse_st(st_bytes({{"a", "F32", {1}, f32_bytes({1})}, {"a", "F32", {1}, f32_bytes({2})}}));
    if (r.ok()) ADD_FAILURE() << "duplicate tensor name accepted";
    else EXPECT_HAS(r.error().message, "test.safetensors: tensor 'a' appears twice");
  }
  EXPECT_HAS(err("{\"t\": "), "not valid JSON");
  EXPECT_HAS(err(std::string(5000, '[') + std::string(5000, ']')), "nested deeper");
  // Header length beyond the file, and an absurd one.
  std::string b = st_bytes({{"a", "F32", {1}, f32_bytes({1})}});
  b[0] = (char)0xff;
  EXPECT_HAS(parse_st(b).error().message, "runs past the end");
  b[6] = (char)0x7f;
  EXPECT_HAS(parse_st(b).error().message, "absurd");
}

// ---- both formats load to the same targets -------------------------------------------

// What `kiln run --adapter` compiles side paths for: the union of the adapters' modules,
// in the table's order and --lora-targets' spelling.
TEST(Adapter, TargetsOfAdaptersAreTheUnionOfTheirModules) {
  auto adapter_on = [](std::vector<int> modules) {
    LoraAdapter a;
    for (int m : modules) {
      LoraTarget t;
      t.module = m;
      a.targets.push_back(std::move(t));
    }
    return a;
  };
  EXPECT_EQ(lora_targets_of({}), "");
  EXPECT_EQ(lora_targets_of({adapter_on({2, 0})}), "q,v");
  EXPECT_EQ(lora_targets_of({adapter_on({0, 2}), adapter_on({6, 0}), adapter_on({})}), "q,v,down");
  std::vector<int> all;
  for (int m = 0; m < lora_names::kNumModules; ++m) all.push_back(m);
  EXPECT_EQ(lora_targets_of({adapter_on(all)}), "q,k,v,o,gate,up,down");
}

TEST(Adapter, PeftAndGgufLoadToTheSameTargets) {
  Fixture fx;
  const int64_t rank = 4;
  auto ts = fx.random_targets(rank, 7);
  auto peft = load_peft_bytes(fx, peft_config(rank, 8.0), st_bytes(peft_entries(ts, rank)));
  ASSERT_TRUE(peft.ok()) << peft.error().message;
  auto gguf = load_gguf_bytes(fx, gguf_adapter(fx, ts, rank, 8.0f));
  ASSERT_TRUE(gguf.ok()) << gguf.error().message;
  for (const LoraAdapter* a : {&*peft, &*gguf}) {
    EXPECT_EQ(a->rank, rank);
    EXPECT_FLOAT_EQ(a->alpha, 8.0f);
    EXPECT_FLOAT_EQ(a->scale, 2.0f);
    EXPECT_FALSE(a->rslora);
    ASSERT_EQ(a->targets.size(), ts.size());
  }
  EXPECT_EQ(peft->format, LoraFormat::Peft);
  EXPECT_EQ(gguf->format, LoraFormat::Gguf);
  EXPECT_EQ(peft->base_model, "tiny");
  for (size_t i = 0; i < ts.size(); ++i) {
    const LoraTarget& p = peft->targets[i];
    const LoraTarget& g = gguf->targets[i];
    SCOPED_TRACE(p.base_tensor);
    EXPECT_EQ(p.base_tensor, gguf_names::layer_tensor(lora_names::kModules[ts[i].module].gguf, ts[i].layer));
    EXPECT_EQ(p.base_tensor, g.base_tensor);
    EXPECT_EQ(p.layer, ts[i].layer);
    EXPECT_EQ(p.module, ts[i].module);
    EXPECT_EQ(p.rank, rank);
    EXPECT_EQ(p.in, ts[i].in);
    EXPECT_EQ(p.out, ts[i].out);
    EXPECT_EQ(p.in, g.in);
    EXPECT_EQ(p.out, g.out);
    EXPECT_EQ(p.a, ts[i].a);  // A is never permuted
    EXPECT_EQ(p.a, g.a);
    EXPECT_EQ(p.b, g.b);      // exact: the permutation only moves rows
    if (ts[i].module <= 1) { EXPECT_NE(p.b, ts[i].b) << "q/k B must be permuted"; }
    else EXPECT_EQ(p.b, ts[i].b);
  }
}

TEST(Adapter, LoadsFromDiskByPath) {
  Fixture fx;
  const int64_t rank = 2;
  auto ts = fx.random_targets(rank, 11);
  TempDir dir;
  dir.write("adapter_config.json", peft_config(rank, 4.0));
  dir.write("adapter_model.safetensors", st_bytes(peft_entries(ts, rank)));
  dir.write("styled.gguf", gguf_adapter(fx, ts, rank, 4.0f));
  auto from_dir = load_lora_adapter(dir.path.string(), fx.cfg, *fx.base);
  ASSERT_TRUE(from_dir.ok()) << from_dir.error().message;
  EXPECT_EQ(from_dir->name, dir.path.filename().string());
  auto from_st = load_lora_adapter((dir.path / "adapter_model.safetensors").string(), fx.cfg, *fx.base);
  ASSERT_TRUE(from_st.ok()) << from_st.error().message;
  auto from_gguf = load_lora_adapter((dir.path / "styled.gguf").string(), fx.cfg, *fx.base);
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.error().message;
  EXPECT_EQ(from_gguf->name, "styled");
  ASSERT_EQ(from_dir->targets.size(), from_gguf->targets.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(from_dir->targets[i].b, from_gguf->targets[i].b);
    EXPECT_EQ(from_st->targets[i].a, from_gguf->targets[i].a);
  }
  // A folder without weights, and one with only the pickle file.
  TempDir empty;
  empty.write("adapter_config.json", peft_config(rank, 4.0));
  EXPECT_HAS(error_of(load_lora_adapter(empty.path.string(), fx.cfg, *fx.base)), "adapter_model.safetensors");
  empty.write("adapter_model.bin", "pickle");
  EXPECT_HAS(error_of(load_lora_adapter(empty.path.string(), fx.cfg, *fx.base)), "not the pickle");
  EXPECT_HAS(error_of(load_lora_adapter((empty.path / "missing.gguf").string(), fx.cfg, *fx.base)), "cannot open");
  // What is not an adapter at all is named as such, with the three forms that are.
  EXPECT_HAS(error_of(load_lora_adapter((empty.path / "adapter_config.json").string(), fx.cfg, *fx.base)),
             "adapter_config.json: not a LoRA adapter: expected a PEFT folder");
  TempDir bare;
  EXPECT_HAS(error_of(load_lora_adapter(bare.path.string(), fx.cfg, *fx.base)),
             "not a PEFT adapter folder: it has no adapter_config.json");
}

TEST(Adapter, ScalesAndHalfPrecision) {
  Fixture fx;
  const int64_t rank = 4;
  auto ts = fx.random_targets(rank, 3);
  auto rs = load_peft_bytes(fx, peft_config(rank, 8.0, /*rslora=*/true), st_bytes(peft_entries(ts, rank)));
  ASSERT_TRUE(rs.ok()) << rs.error().message;
  EXPECT_TRUE(rs->rslora);
  EXPECT_FLOAT_EQ(rs->scale, 8.0f / 2.0f);  // alpha / sqrt(4)
  for (const char* dt : {"F16", "BF16"}) {
    auto h = load_peft_bytes(fx, peft_config(rank, 16.0), st_bytes(peft_entries(ts, rank, dt)));
    ASSERT_TRUE(h.ok()) << h.error().message;
    EXPECT_FLOAT_EQ(h->scale, 4.0f);
    const LoraTarget& t = h->targets[2];  // v_proj, not permuted
    ASSERT_EQ(t.module, 2);
    float tol = std::string(dt) == "F16" ? 1e-3f : 1e-2f;
    for (size_t i = 0; i < t.a.size(); ++i) EXPECT_NEAR(t.a[i], ts[2].a[i], tol * std::fabs(ts[2].a[i]) + 1e-6f);
  }
  // GGUF: f16 tensors, alpha 0 means scale 1 (llama.cpp).
  auto g = load_gguf_bytes(fx, gguf_adapter(fx, ts, rank, 0.0f, DType::F16));
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_FLOAT_EQ(g->scale, 1.0f);
}

TEST(Adapter, GgufMixedRanksFoldTheirScaleIntoB) {
  Fixture fx;
  auto t4 = fx.random_targets(4, 5);
  auto t2 = fx.random_targets(2, 6);
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.type", "adapter");
  w.add_string("adapter.type", "lora");
  w.add_f32("adapter.lora.alpha", 8.0f);
  w.add_tensor_f32("blk.0.attn_v.weight.lora_a", DType::F32, {4, t4[2].in}, t4[2].a);
  w.add_tensor_f32("blk.0.attn_v.weight.lora_b", DType::F32, {t4[2].out, 4}, t4[2].b);
  w.add_tensor_f32("blk.0.ffn_up.weight.lora_a", DType::F32, {2, t2[5].in}, t2[5].a);
  w.add_tensor_f32("blk.0.ffn_up.weight.lora_b", DType::F32, {t2[5].out, 2}, t2[5].b);
  auto a = load_gguf_bytes(fx, w.bytes());
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->rank, 4);
  EXPECT_FLOAT_EQ(a->scale, 2.0f);
  ASSERT_EQ(a->targets.size(), 2u);
  EXPECT_EQ(a->targets[0].b, t4[2].b);
  // llama.cpp scales the rank-2 target by 8/2 = 4 = 2 * scale.
  for (size_t i = 0; i < t2[5].b.size(); ++i) EXPECT_FLOAT_EQ(a->targets[1].b[i], 2.0f * t2[5].b[i]);
}

// The permutation of q/k B rows is what makes the GGUF rope (adjacent pairs) see the same
// attention scores as the HF rope (rotate_half) sees on the HF-ordered adapter.
TEST(Adapter, PermutedQkDeltasGiveTheSameRopeScores) {
  Fixture fx;
  const int64_t rank = 4, hd = fx.cfg.head_dim;
  auto ts = fx.random_targets(rank, 9);
  auto peft = load_peft_bytes(fx, peft_config(rank, 8.0), st_bytes(peft_entries(ts, rank)));
  ASSERT_TRUE(peft.ok()) << peft.error().message;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> x((size_t)fx.spec.embd);
  for (auto& v : x) v = nd(rng);
  auto delta_x = [&](const std::vector<float>& a, const std::vector<float>& b, int64_t out, int64_t in) {
    std::vector<double> ax((size_t)rank, 0.0), y((size_t)out, 0.0);
    for (int64_t r = 0; r < rank; ++r)
      for (int64_t i = 0; i < in; ++i) ax[r] += (double)a[r * in + i] * x[i];
    for (int64_t o = 0; o < out; ++o)
      for (int64_t r = 0; r < rank; ++r) y[o] += (double)peft->scale * b[o * rank + r] * ax[r];
    return y;
  };
  auto rope = [&](std::vector<double> v, int pos, bool neox) {
    for (int64_t h = 0; h < (int64_t)v.size() / hd; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        double th = pos * std::pow(10000.0, -2.0 * i / hd), c = std::cos(th), s = std::sin(th);
        int64_t i0 = h * hd + (neox ? i : 2 * i), i1 = h * hd + (neox ? i + hd / 2 : 2 * i + 1);
        double a = v[i0], b = v[i1];
        v[i0] = a * c - b * s;
        v[i1] = a * s + b * c;
      }
    return v;
  };
  const HfTarget& q = ts[0];
  const HfTarget& k = ts[1];
  ASSERT_EQ(peft->targets[0].module, 0);
  ASSERT_EQ(peft->targets[1].module, 1);
  auto q_hf = rope(delta_x(q.a, q.b, q.out, q.in), 5, true);
  auto k_hf = rope(delta_x(k.a, k.b, k.out, k.in), 2, true);
  auto q_gg = rope(delta_x(peft->targets[0].a, peft->targets[0].b, q.out, q.in), 5, false);
  auto k_gg = rope(delta_x(peft->targets[1].a, peft->targets[1].b, k.out, k.in), 2, false);
  const int64_t group = fx.cfg.n_head / fx.cfg.n_head_kv;
  for (int64_t h = 0; h < fx.cfg.n_head; ++h) {
    double s_hf = 0, s_gg = 0;
    for (int64_t i = 0; i < hd; ++i) {
      s_hf += q_hf[h * hd + i] * k_hf[h / group * hd + i];
      s_gg += q_gg[h * hd + i] * k_gg[h / group * hd + i];
    }
    EXPECT_NEAR(s_gg, s_hf, 1e-6 * (1 + std::fabs(s_hf))) << "head " << h;
  }
  // Without the permutation the scores differ (the check has teeth).
  auto q_raw = rope(delta_x(q.a, q.b, q.out, q.in), 5, false);
  auto k_raw = rope(delta_x(k.a, k.b, k.out, k.in), 2, false);
  double diff = 0;
  for (int64_t i = 0; i < hd; ++i) diff += q_raw[i] * k_raw[i] - q_hf[i] * k_hf[i];
  EXPECT_GT(std::fabs(diff), 1e-3);
}

TEST(Adapter, MergedWeightIdentityForOneTarget) {
  // W + s*B*A computed from the loaded target equals the merge of the HF adapter into the
  // HF weight followed by the converter's permutation.
  Fixture fx;
  const int64_t rank = 3;
  auto ts = fx.random_targets(rank, 13);
  auto g = load_gguf_bytes(fx, gguf_adapter(fx, ts, rank, 6.0f));
  ASSERT_TRUE(g.ok()) << g.error().message;
  const HfTarget& k = ts[1];
  std::vector<float> w_hf((size_t)(k.out * k.in));
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  for (auto& v : w_hf) v = nd(rng);
  std::vector<float> merged_hf = w_hf;
  for (int64_t o = 0; o < k.out; ++o)
    for (int64_t i = 0; i < k.in; ++i) {
      double d = 0;
      for (int64_t r = 0; r < rank; ++r) d += (double)k.b[o * rank + r] * k.a[r * k.in + i];
      merged_hf[o * k.in + i] += (float)(6.0 / rank * d);
    }
  std::vector<float> want = permute_like_converter(merged_hf, k.out, k.in, fx.cfg.n_head_kv);
  std::vector<float> w_gg = permute_like_converter(w_hf, k.out, k.in, fx.cfg.n_head_kv);
  const LoraTarget& t = g->targets[1];
  ASSERT_EQ(t.base_tensor, "blk.0.attn_k.weight");
  for (int64_t o = 0; o < k.out; ++o)
    for (int64_t i = 0; i < k.in; ++i) {
      double d = 0;
      for (int64_t r = 0; r < rank; ++r) d += (double)t.b[o * rank + r] * t.a[r * k.in + i];
      EXPECT_NEAR(w_gg[o * k.in + i] + g->scale * d, want[o * k.in + i], 1e-4);
    }
}

// ---- validation errors ---------------------------------------------------------------

TEST(Adapter, PeftValidationErrorsNameTheFileAndTensor) {
  Fixture fx;
  const int64_t rank = 4;
  auto ts = fx.random_targets(rank, 21);
  const std::string cfg = peft_config(rank, 8.0);
  auto entries = peft_entries(ts, rank);
  auto with = [&](auto edit) {
    auto e = entries;
    edit(e);
    return st_bytes(e);
  };
  const std::string st_path = "peft/adapter_model.safetensors";
  const std::string q0a = peft_name(ts[0], true), q0b = peft_name(ts[0], false);

  // Rank above the maximum.
  std::string m = error_of(load_peft_bytes(fx, cfg, st_bytes(entries), {.max_rank = 2}));
  EXPECT_HAS(m, st_path);
  EXPECT_HAS(m, "tensor '" + q0a + "': rank 4 is above the maximum rank 2");
  // Made for another base: A with the wrong input width, B with the wrong output height.
  m = error_of(load_peft_bytes(fx, cfg, with([&](auto& e) {
    e[0].shape = {rank, 32};
    e[0].data.resize(rank * 32 * 4);
  })));
  EXPECT_HAS(m, "tensor '" + q0a + "': shape [4, 32], but base tensor 'blk.0.attn_q.weight' has 64 inputs");
  EXPECT_HAS(m, "another base");
  m = error_of(load_peft_bytes(fx, cfg, with([&](auto& e) {
    e[1].shape = {32, rank};
    e[1].data.resize(rank * 32 * 4);
  })));
  EXPECT_HAS(m, "tensor '" + q0b + "': shape [32, 4], but base tensor 'blk.0.attn_q.weight' has 64 outputs");
  // Rank of the tensors disagrees with r.
  EXPECT_HAS(error_of(load_peft_bytes(fx, peft_config(8, 8.0), st_bytes(entries))),
             "rank 4, but adapter_config.json says r = 8");
  // A without B, B without A.
  EXPECT_HAS(error_of(load_peft_bytes(fx, cfg, with([&](auto& e) { e.erase(e.begin() + 1); }))),
             "tensor '" + q0a + "' has no matching LoRA B tensor");
  EXPECT_HAS(error_of(load_peft_bytes(fx, cfg, with([&](auto& e) { e.erase(e.begin()); }))),
             "tensor '" + q0b + "' has no matching LoRA A tensor");
  // Unsupported dtype.
  m = error_of(load_peft_bytes(fx, cfg, with([&](auto& e) { e[0].dtype = "I32"; })));
  EXPECT_HAS(m, "tensor '" + q0a + "': dtype I32 is not supported");
  // Layer out of range, unknown module, module not targeted.
  std::string l9 = "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight";
  EXPECT_HAS(error_of(load_peft_bytes(fx, cfg, with([&](auto& e) { e[0].name = l9; }))),
             "tensor '" + l9 + "': layer out of range (the base model has 2 layers)");
  EXPECT_HAS(error_of(load_peft_bytes(fx, cfg, with([&](auto& e) {
               e[0].name = "base_model.model.lm_head.lora_A.weight";
             }))),
             "tensor 'base_model.model.lm_head.lora_A.weight' is not a LoRA tensor");
  EXPECT_HAS(error_of(load_peft_bytes(fx, peft_config(rank, 8.0, false, R"(["q_proj","v_proj"])"), st_bytes(entries))),
             "_proj' is not in adapter_config.json's target_modules");
  // Non-finite values.
  EXPECT_HAS(error_of(load_peft_bytes(fx, cfg, with([&](auto& e) {
               float nan = std::nanf("");
               std::memcpy(e[0].data.data(), &nan, 4);
             }))),
             "tensor '" + q0a + "' holds a non-finite value");
  // No tensors at all.
  EXPECT_HAS(error_of(load_peft_bytes(fx, cfg, st_bytes({}))), "no LoRA tensors");
}

TEST(Adapter, PeftConfigErrors) {
  Fixture fx;
  const int64_t rank = 2;
  auto ts = fx.random_targets(rank, 22);
  const std::string st = st_bytes(peft_entries(ts, rank));
  auto cfg_err = [&](const std::string& cfg) { return error_of(load_peft_bytes(fx, cfg, st)); };
  const std::string tm = R"("target_modules":["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"])";
  EXPECT_HAS(cfg_err(R"({"lora_alpha":4,)" + tm + "}"), "peft/adapter_config.json: missing key 'r'");
  EXPECT_HAS(cfg_err(R"({"r":2,)" + tm + "}"), "missing key 'lora_alpha'");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4})"), "missing key 'target_modules'");
  EXPECT_HAS(cfg_err(R"({"r":0,"lora_alpha":4,)" + tm + "}"), "'r' is not a positive integer");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":"x",)" + tm + "}"), "'lora_alpha' is not a number");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"target_modules":["q_proj","lm_head"]})"),
             "unknown target module 'lm_head'");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"target_modules":".*proj"})"), "only a list of module names");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"use_dora":true,)" + tm + "}"), "DoRA");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"bias":"all",)" + tm + "}"), "bias");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"modules_to_save":["lm_head"],)" + tm + "}"), "modules_to_save");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"rank_pattern":{"q_proj":8},)" + tm + "}"), "rank_pattern");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"peft_type":"IA3",)" + tm + "}"), "peft_type");
  EXPECT_HAS(cfg_err(R"({"r":2,"lora_alpha":4,"use_rslora":"yes",)" + tm + "}"), "'use_rslora' is not true or false");
  EXPECT_HAS(cfg_err("{not json"), "not valid JSON");
  EXPECT_HAS(cfg_err("[]"), "not a JSON object");
  // "all-linear" and empty patterns are accepted.
  auto ok = load_peft_bytes(fx, R"({"r":2,"lora_alpha":4,"target_modules":"all-linear","rank_pattern":{},"alpha_pattern":{}})", st);
  EXPECT_TRUE(ok.ok()) << ok.error().message;
}

TEST(Adapter, GgufValidationErrors) {
  Fixture fx;
  const int64_t rank = 2;
  auto ts = fx.random_targets(rank, 23);
  auto build = [&](auto edit) {
    GgufWriter w;
    std::string type = "adapter", atype = "lora", arch = "llama";
    bool alpha = true;
    struct T { std::string name; DType type; std::vector<int64_t> shape; std::vector<float> v; };
    std::vector<T> tensors = {
        {"blk.0.attn_q.weight.lora_a", DType::F32, {rank, 64}, ts[0].a},
        {"blk.0.attn_q.weight.lora_b", DType::F32, {64, rank}, ts[0].b},
        {"blk.0.attn_norm.weight", DType::F32, {64}, std::vector<float>(64, 1.0f)},  // ignored
    };
    edit(type, atype, arch, alpha, tensors);
    w.add_string("general.architecture", arch);
    w.add_string("general.type", type);
    w.add_string("adapter.type", atype);
    if (alpha) w.add_f32("adapter.lora.alpha", 4.0f);
    for (auto& t : tensors) w.add_tensor_f32(t.name, t.type, t.shape, t.v);
    return w.bytes();
  };
  auto nothing = [](auto&...) {};
  auto base = load_gguf_bytes(fx, build(nothing));
  ASSERT_TRUE(base.ok()) << base.error().message;
  EXPECT_EQ(base->targets.size(), 1u);
  EXPECT_FLOAT_EQ(base->scale, 2.0f);

  auto err = [&](auto edit, LoraOptions o = {}) { return error_of(load_gguf_bytes(fx, build(edit), o)); };
  EXPECT_HAS(err([](auto& type, auto&...) { type = "model"; }), "lora.gguf: general.type is 'model', expected 'adapter'");
  EXPECT_HAS(err([](auto&, auto& atype, auto&...) { atype = "control_vector"; }), "adapter.type is 'control_vector'");
  EXPECT_HAS(err([](auto&, auto&, auto& arch, auto&...) { arch = "qwen2"; }), "architecture 'qwen2' does not match");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto& alpha, auto&) { alpha = false; }), "adapter.lora.alpha");
  EXPECT_HAS(err(nothing, {.max_rank = 1}), "tensor 'blk.0.attn_q.weight.lora_a': rank 2 is above the maximum rank 1");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto&, auto& t) { t.erase(t.begin() + 1); }),
             "lora.gguf: tensor 'blk.0.attn_q.weight.lora_a' has no matching LoRA B tensor");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto&, auto& t) { t[0].name = "blk.7.attn_q.weight.lora_a"; }),
             "tensor 'blk.7.attn_q.weight.lora_a': layer out of range");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto&, auto& t) { t[0].name = "token_embd.weight.lora_a"; }),
             "tensor 'token_embd.weight.lora_a': 'token_embd.weight' is not a LoRA target");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto&, auto& t) { t[0].name = "blk.0.attn_q.weight.lora_c"; }),
             "tensor 'blk.0.attn_q.weight.lora_c' is neither a LoRA A");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto&, auto& t) { t[0].type = DType::Q4_0; }),
             "tensor 'blk.0.attn_q.weight.lora_a': type q4_0 is not supported");
  EXPECT_HAS(err([&](auto&, auto&, auto&, auto&, auto& t) {
               t[0].shape = {rank, 32};
               t[0].v.resize(rank * 32);
             }),
             "tensor 'blk.0.attn_q.weight.lora_a': shape [2, 32], but base tensor 'blk.0.attn_q.weight' has 64 inputs");
  EXPECT_HAS(err([&](auto&, auto&, auto&, auto&, auto& t) {  // A not transposed: [in, rank]
               t[0].shape = {64, rank};
             }),
             "tensor 'blk.0.attn_q.weight.lora_a': shape [64, 2]");
  EXPECT_HAS(err([](auto&, auto&, auto&, auto&, auto& t) { t.push_back(t[1]); }),
             "tensor 'blk.0.attn_q.weight.lora_b' appears twice");
  // Loading a model as an adapter.
  EXPECT_HAS(error_of(load_gguf_bytes(fx, fx.base_bytes)), "missing metadata key 'general.type'");
}

TEST(Adapter, CorruptAdapterBytesNeverCrash) {
  Fixture fx;
  const int64_t rank = 2;
  auto ts = fx.random_targets(rank, 31);
  ts.resize(2);
  std::string g = gguf_adapter(fx, ts, rank, 4.0f);
  std::string s = st_bytes(peft_entries(ts, rank));
  const std::string cfg = peft_config(rank, 4.0);
  ASSERT_TRUE(load_gguf_bytes(fx, g).ok());
  ASSERT_TRUE(load_peft_bytes(fx, cfg, s).ok());
  std::mt19937 rng(5);
  int errors = 0;
  for (int i = 0; i < 400; ++i) {
    std::string gb = g, sb = s;
    for (int k = 0; k < 4; ++k) {
      gb[rng() % gb.size()] = (char)rng();
      sb[rng() % std::min<size_t>(sb.size(), 600)] = (char)rng();
    }
    errors += !load_gguf_bytes(fx, gb).ok();
    errors += !load_peft_bytes(fx, cfg, sb).ok();
    errors += !load_gguf_bytes(fx, g.substr(0, rng() % g.size())).ok();
  }
  EXPECT_GT(errors, 400);
}

TEST(Adapter, RopePermuteMatchesTheConverter) {
  std::vector<float> m(24 * 3);
  for (size_t i = 0; i < m.size(); ++i) m[i] = (float)i;
  for (int64_t heads : {1, 2, 3, 6}) {
    std::vector<float> p = m;
    rope_permute_rows(p, 24, 3, heads);
    EXPECT_EQ(p, permute_like_converter(m, 24, 3, heads)) << heads;
  }
}

}  // namespace
}  // namespace kiln
