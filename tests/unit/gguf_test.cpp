// tests/unit/gguf_test.cpp — the GGUF reader on synthetic files, hostile bytes and the
// real default model.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "frontend/gguf.h"
#include "frontend/gguf_writer.h"
#include "frontend/llama.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

// The file owns its bytes: callers pass temporaries (w.bytes(), substrings).
Result<std::unique_ptr<GgufFile>> parse_bytes(std::string b) { return GgufFile::parse_owned(std::move(b), "test.gguf"); }

std::string error_of(const std::string& bytes) {
  auto r = parse_bytes(bytes);
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message;
}

TEST(Gguf, RoundTripsMetadataAndTensors) {
  GgufWriter w;
  w.add_u32("a.u32", 7);
  w.add_i32("a.i32", -3);
  w.add_f32("a.f32", 1.5f);
  w.add_bool("a.bool", true);
  w.add_string("a.str", "hello");
  w.add_strings("a.strs", {"x", "", "yz"});
  w.add_f32s("a.f32s", {1.0f, -2.0f});
  w.add_i32s("a.i32s", {4, 5, 6});
  std::vector<float> vals(64);
  for (int i = 0; i < 64; ++i) vals[i] = (float)i * 0.25f - 3.0f;
  w.add_tensor_f32("t.f32", DType::F32, {2, 32}, vals);
  w.add_tensor_f32("t.q8", DType::Q8_0, {2, 32}, vals);
  std::string b = w.bytes();
  auto r = parse_bytes(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const GgufFile& f = **r;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(*f.get_int("a.u32"), 7);
  EXPECT_EQ(*f.get_int("a.i32"), -3);
  EXPECT_DOUBLE_EQ(*f.get_float("a.f32"), 1.5);
  EXPECT_EQ(*f.find("a.bool")->as_bool(), true);
  EXPECT_EQ(*f.get_string("a.str"), "hello");
  EXPECT_EQ((*f.get_array("a.strs"))->strings.size(), 3u);
  EXPECT_EQ((*f.get_array("a.strs"))->strings[2], "yz");
  EXPECT_EQ((*f.get_array("a.f32s"))->floats[1], -2.0);
  EXPECT_EQ((*f.get_array("a.i32s"))->ints[2], 6);
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensor* t = f.tensor("t.f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<uint64_t>{32, 2}));
  std::vector<float> back(64);
  dequantize_row(t->type, t->data, back.data(), 64);
  EXPECT_EQ(back, vals);
  const GgufTensor* q = f.tensor("t.q8");
  dequantize_row(q->type, q->data, back.data(), 64);
  // Q8_0 rounds to half a step of amax/127 per block (amax is 12.75 in the second block).
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(back[i], vals[i], 12.75 / 254 + 1e-3);
  // Typed lookups name the key when the type is wrong or the key is missing.
  EXPECT_NE(f.get_int("a.str").error().message.find("'a.str'"), std::string::npos);
  EXPECT_NE(f.get_string("nope").error().message.find("missing metadata key 'nope'"), std::string::npos);
}

TEST(Gguf, EveryTruncationIsAnErrorNotACrash) {
  std::string b = testing::tiny_llama_gguf({.vocab = 32, .embd = 32, .layers = 1, .heads = 2,
                                            .kv_heads = 1, .ff = 32});
  ASSERT_TRUE(parse_bytes(b).ok());
  for (size_t n = 0; n < b.size(); n += (n < 4096 ? 1 : 97)) {
    auto r = parse_bytes(b.substr(0, n));
    EXPECT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
  }
}

TEST(Gguf, BadMagicAndVersion) {
  std::string b = testing::tiny_llama_gguf();
  std::string bad = b;
  bad[0] = 'X';
  EXPECT_NE(error_of(bad).find("not a GGUF file"), std::string::npos);
  bad = b;
  uint32_t v = 99;
  std::memcpy(&bad[4], &v, 4);
  EXPECT_NE(error_of(bad).find("GGUF version 99 is not supported"), std::string::npos);
}

TEST(Gguf, AbsurdCountsAndDimensions) {
  GgufWriter w;
  w.add_u32("k", 1);
  std::string b = w.bytes();
  uint64_t huge = 1ull << 60;
  std::string bad = b;
  std::memcpy(&bad[16], &huge, 8);  // metadata count
  EXPECT_NE(error_of(bad).find("metadata count"), std::string::npos);
  bad = b;
  std::memcpy(&bad[8], &huge, 8);  // tensor count
  EXPECT_NE(error_of(bad).find("tensor count"), std::string::npos);

  GgufWriter t;
  t.add_tensor_f32("w", DType::F32, {1, 32}, std::vector<float>(32, 1.0f));
  std::string tb = t.bytes();
  // Header (24) + name (8 + 1) + n_dims (4) -> first dim at byte 37.
  bad = tb;
  uint64_t dim = 1ull << 50;
  std::memcpy(&bad[37], &dim, 8);
  EXPECT_NE(error_of(bad).find("tensor 'w' dimension 0"), std::string::npos);
  bad = tb;
  uint32_t nd = 9;
  std::memcpy(&bad[33], &nd, 4);
  EXPECT_NE(error_of(bad).find("tensor 'w' has 9 dimensions"), std::string::npos);
}

TEST(Gguf, UnknownTensorTypeNamesTheTensor) {
  GgufWriter t;
  t.add_tensor_f32("blk.0.x", DType::F32, {1, 32}, std::vector<float>(32, 1.0f));
  std::string b = t.bytes();
  // type field follows name (8+7), n_dims (4), two dims (16) after the 24-byte header.
  size_t type_at = 24 + 8 + 7 + 4 + 16;
  uint32_t q6k = 14;
  std::memcpy(&b[type_at], &q6k, 4);
  std::string e = error_of(b);
  EXPECT_NE(e.find("tensor 'blk.0.x' has type q6_K"), std::string::npos) << e;
}

TEST(Gguf, TensorDataOutOfBounds) {
  GgufWriter t;
  t.add_tensor_f32("w", DType::F32, {4, 32}, std::vector<float>(128, 1.0f));
  std::string b = t.bytes();
  std::string e = error_of(b.substr(0, b.size() - 64));
  EXPECT_NE(e.find("tensor 'w' data"), std::string::npos) << e;
  EXPECT_NE(e.find("outside the file"), std::string::npos) << e;
}

TEST(Gguf, UnknownValueTypeAndDuplicateKey) {
  GgufWriter w;
  w.add_u32("dup", 1);
  w.add_u32("dup", 2);
  EXPECT_NE(error_of(w.bytes()).find("key 'dup' appears twice"), std::string::npos);
  GgufWriter v;
  v.add_u32("key", 1);
  std::string b = v.bytes();
  uint32_t bad_type = 77;
  std::memcpy(&b[24 + 8 + 3], &bad_type, 4);
  EXPECT_NE(error_of(b).find("key 'key' has unknown value type 77"), std::string::npos);
}

TEST(Llama, WrongArchitectureAndBadHyperparameters) {
  auto open = [](const std::string& bytes) { return parse_bytes(bytes); };
  testing::TinyLlamaSpec s;
  s.arch = "gpt2";
  auto f = open(testing::tiny_llama_gguf(s));
  ASSERT_TRUE(f.ok());
  auto c = read_llama_config(**f);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("architecture 'gpt2' is not supported"), std::string::npos);

  s = {};
  s.heads = 5;  // 64 is not a multiple of 5
  f = open(testing::tiny_llama_gguf(s));
  ASSERT_TRUE(f.ok());
  c = read_llama_config(**f);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("not a multiple of the head count"), std::string::npos);
}

// Scaled rope: LLaMA 3's factors (rope_freqs.weight) reach every rope node of the graph,
// of the right shape; other kinds of scaling are refused, not run as plain rope.
TEST(Llama, ScaledRope) {
  testing::TinyLlamaSpec s;  // head_dim 16: 8 pairs
  GgufWriter w = testing::tiny_llama_writer(s);
  w.add_tensor_f32("rope_freqs.weight", DType::F32, {8}, std::vector<float>(8, 2.0f));
  std::shared_ptr<const GgufFile> f(std::move(parse_bytes(w.bytes())).value());
  auto c = read_llama_config(*f);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto g = build_llama_graph(f, *c, {});
  ASSERT_TRUE(g.ok()) << g.error().message;
  int ropes = 0;
  for (const Node* n : g->nodes())
    if (n->op() == Op::Rope) {
      ++ropes;
      ASSERT_EQ(n->operands().size(), 3u);
      EXPECT_EQ(n->operand(2)->str_attr("name"), "rope_freqs.weight");
    }
  EXPECT_EQ(ropes, 2 * s.layers);

  GgufWriter bad = testing::tiny_llama_writer(s);
  bad.add_tensor_f32("rope_freqs.weight", DType::F32, {7}, std::vector<float>(7, 2.0f));
  std::shared_ptr<const GgufFile> fb(std::move(parse_bytes(bad.bytes())).value());
  auto gb = build_llama_graph(fb, *read_llama_config(*fb), {});
  ASSERT_FALSE(gb.ok());
  EXPECT_NE(gb.error().message.find("'rope_freqs.weight' has shape [7], expected [8]"), std::string::npos)
      << gb.error().message;

  GgufWriter w2 = testing::tiny_llama_writer(s);
  w2.add_string("llama.rope.scaling.type", "yarn");
  auto f2 = parse_bytes(w2.bytes());
  ASSERT_TRUE(f2.ok());
  auto c2 = read_llama_config(**f2);
  ASSERT_FALSE(c2.ok());
  EXPECT_NE(c2.error().message.find("'llama.rope.scaling.type' = \"yarn\""), std::string::npos) << c2.error().message;
}

TEST(Llama, MissingOrMisshapenTensorIsNamed) {
  testing::TinyLlamaSpec s;
  GgufWriter w = testing::tiny_llama_writer(s);
  w.add_tensor_f32("output.weight", DType::F32, {3, 32}, std::vector<float>(96, 0.0f));
  auto f = parse_bytes(w.bytes());
  ASSERT_TRUE(f.ok());
  std::shared_ptr<const GgufFile> file(std::move(f).value());
  auto c = read_llama_config(*file);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto g = build_llama_graph(file, *c, {});
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message.find("tensor 'output.weight' has shape [3,32], expected [64,64]"),
            std::string::npos) << g.error().message;
}

TEST(DefaultModel, ReadsHyperparametersAndTensors) {
  auto f = GgufFile::open(KILN_DEFAULT_MODEL);
  ASSERT_TRUE(f.ok()) << f.error().message << " (run scripts/setup.sh to fetch the default model)";
  EXPECT_EQ((*f)->tensors().size(), 272u);
  auto c = read_llama_config(**f);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->n_layer, 30);
  EXPECT_EQ(c->n_embd, 576);
  EXPECT_EQ(c->n_head, 9);
  EXPECT_EQ(c->n_head_kv, 3);
  EXPECT_EQ(c->n_vocab, 49152);
  EXPECT_EQ(c->n_ff, 1536);
  EXPECT_TRUE(c->tied_output);
  EXPECT_EQ((*f)->tensor("token_embd.weight")->type, DType::Q8_0);
  EXPECT_EQ((*f)->tensor("blk.0.attn_q.weight")->type, DType::Q4_1);
}

}  // namespace
}  // namespace kiln
