// tests/unit/packing_test.cpp — the packed weight layout (ir/packing.h), the interpreter's
// reading of it, and the pack-weights pass.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "frontend/gguf_writer.h"
#include "ir/interpreter.h"
#include "ir/packing.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "support/half.h"
#include "tests/unit/numeric.h"

namespace kiln {
namespace {

using testing::random_floats;
using testing::same_bits;

std::vector<uint8_t> packed_of(DType dt, const std::string& gguf, int64_t N, int64_t K) {
  std::vector<uint8_t> p(gguf.size());
  pack_rows(dt, reinterpret_cast<const uint8_t*>(gguf.data()), N, K, p.data());
  return p;
}

// Element (n, k) read from packed bytes by the layout as ir/packing.h documents it, written
// out independently of packing.cpp.
float packed_element(DType dt, const std::vector<uint8_t>& p, int64_t K, int64_t n, int64_t k) {
  const int64_t nb = K / 32, g = n / 16, l = n % 16, b = k / 32, j = k % 32;
  const uint8_t* blk = p.data() + (g * nb + b) * 16 * dtype_info(dt).block_bytes;
  uint16_t d, m = 0;
  std::memcpy(&d, blk + 2 * l, 2);
  if (dt == DType::Q8_0) {
    const uint8_t u = blk[32 + 64 * (j / 4) + 4 * l + j % 4];
    return (float)((int)u - 128) * fp16_to_f32(d);
  }
  const int64_t qs = dt == DType::Q4_1 ? 64 : 32;
  if (dt == DType::Q4_1) std::memcpy(&m, blk + 32 + 2 * l, 2);
  const uint8_t byte = blk[qs + 64 * ((j % 16) / 4) + 4 * l + j % 4];
  const int u = j < 16 ? byte & 15 : byte >> 4;
  return dt == DType::Q4_0 ? (float)(u - 8) * fp16_to_f32(d) : (float)u * fp16_to_f32(d) + fp16_to_f32(m);
}

TEST(Packing, LayoutAndRoundTrip) {
  std::mt19937 rng(5);
  for (DType dt : {DType::Q4_0, DType::Q4_1, DType::Q8_0}) {
    for (auto [N, K] : {std::pair<int64_t, int64_t>{16, 32}, {48, 96}, {32, 576}}) {
      SCOPED_TRACE(fmt::format("{} N={} K={}", dtype_name(dt), N, K));
      ASSERT_TRUE(packable(dt, {N, K}));
      const std::string gguf = encode_tensor_data(dt, random_floats(rng, N * K));
      const auto p = packed_of(dt, gguf, N, K);
      const uint64_t rb = dtype_bytes(dt, (uint64_t)K);
      std::vector<float> want((size_t)K);
      int wrong = 0;
      for (int64_t n = 0; n < N; ++n) {
        std::vector<uint8_t> row(rb);
        unpack_row(dt, p.data(), K, n, row.data());
        EXPECT_EQ(std::memcmp(row.data(), gguf.data() + n * rb, rb), 0) << "row " << n;
        dequantize_row(dt, gguf.data() + n * rb, want.data(), (uint64_t)K);
        for (int64_t k = 0; k < K; ++k) wrong += packed_element(dt, p, K, n, k) != want[(size_t)k];
      }
      EXPECT_EQ(wrong, 0);
      EXPECT_NE(std::memcmp(p.data(), gguf.data(), p.size()), 0);  // it did move bytes
    }
  }
  EXPECT_FALSE(packable(DType::Q4_1, {24, 32}));  // rows not a multiple of 16
  EXPECT_FALSE(packable(DType::Q4_1, {16, 48}));  // not whole blocks
  EXPECT_FALSE(packable(DType::F16, {16, 32}));
}

class Bytes final : public WeightSource {
 public:
  std::map<std::string, std::pair<TensorType, std::string>, std::less<>> t;
  std::optional<WeightView> find(std::string_view name) const override {
    auto it = t.find(name);
    if (it == t.end()) return std::nullopt;
    const auto& [ty, b] = it->second;
    return WeightView{ty.dtype, ty.shape, reinterpret_cast<const uint8_t*>(b.data()), b.size()};
  }
  std::string describe() const override { return "packing_test"; }
};

// y = matmul(embed(E, tokens), W) + matmul_swiglu(...) over quantized weights, a dequant'd
// weight and one of 24 rows: the pass packs exactly the weights every user can read packed,
// and the interpreter gives the same bits before and after.
TEST(Packing, PassPacksWhatItCanAndTheGraphComputesTheSame) {
  std::mt19937 rng(9);
  const int64_t V = 32, D = 64, F = 96;
  auto ws = std::make_shared<Bytes>();
  Graph g;
  auto w = [&](const char* name, DType dt, int64_t n, int64_t k) {
    ws->t[name] = {{dt, {n, k}}, encode_tensor_data(dt, random_floats(rng, n * k, 0.2f))};
    return g.add(Op::Weight, {}, {dt, {n, k}}, {{"name", std::string(name)}});
  };
  Node* tok = g.add(Op::Input, {}, {DType::I32, {kDynamic}}, {{"name", std::string("tokens")}});
  Node* e = w("embd", DType::Q8_0, V, D);
  Node* wg = w("gate", DType::Q4_1, F, D);
  Node* wu = w("up", DType::Q4_1, F, D);
  Node* wd = w("down", DType::Q4_0, D, F);
  Node* odd = w("odd", DType::Q4_1, 24, D);    // 24 rows: not packable
  Node* deq = w("deq", DType::Q4_1, D, D);     // read through dequant: stays
  auto b = [&](Op op, std::vector<Node*> o) { return *g.build(op, std::move(o), {}); };
  Node* x = b(Op::Embed, {e, tok});
  Node* h = b(Op::MatMulSwiGlu, {x, wg, wu});
  Node* y = b(Op::MatMul, {h, wd});
  Node* z = b(Op::MatMul, {b(Op::MatMul, {y, b(Op::Dequant, {deq})}), e});
  Node* o = b(Op::MatMul, {x, odd});
  (void)*g.build(Op::Output, {z}, {{"name", std::string("logits")}});
  (void)*g.build(Op::Output, {o}, {{"name", std::string("odd")}});
  g.set_weights(ws);
  ASSERT_TRUE(verify(g).ok()) << verify(g).error().message;
  std::map<std::string, Tensor> in{{"tokens", Tensor::i32_of({3}, {0, 31, 7})}};
  auto before = Interpreter(g).run(in);
  ASSERT_TRUE(before.ok()) << before.error().message;

  PassManager pm;
  ASSERT_TRUE(pm.add_pipeline("pack-weights").ok());
  Status s = pm.run(g);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(verify(g).ok());
  for (auto [node, want] : {std::pair<Node*, bool>{e, true}, {wg, true}, {wu, true}, {wd, true}, {odd, false}, {deq, false}})
    EXPECT_EQ(node->int_attr("packed_rows").value_or(0), want ? 16 : 0) << *node->str_attr("name");
  // The weight source now serves packed bytes for the packed ones.
  EXPECT_NE(std::memcmp(g.weights()->find("gate")->data, ws->t["gate"].second.data(), ws->t["gate"].second.size()), 0);
  EXPECT_EQ(std::memcmp(g.weights()->find("odd")->data, ws->t["odd"].second.data(), ws->t["odd"].second.size()), 0);

  auto after = Interpreter(g).run(in);
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_TRUE(same_bits(after->at("logits").f32, before->at("logits").f32));
  EXPECT_TRUE(same_bits(after->at("odd").f32, before->at("odd").f32));

  // Off by attribute, and with float activations (no packed kernels): nothing changes.
  for (auto [key, val] : {std::pair<const char*, int64_t>{"pack_weights", 0}, {"int8_activations", 0}}) {
    Graph g2;
    Node* w2 = g2.add(Op::Weight, {}, {DType::Q4_1, {F, D}}, {{"name", std::string("gate")}});
    Node* x2 = g2.add(Op::Input, {}, {DType::F32, {kDynamic, D}}, {{"name", std::string("x")}});
    (void)*g2.build(Op::Output, {*g2.build(Op::MatMul, {x2, w2}, {})}, {{"name", std::string("y")}});
    g2.set_weights(ws);
    g2.set_attr(key, val);
    PassManager pm2;
    ASSERT_TRUE(pm2.add_pipeline("pack-weights").ok());
    ASSERT_TRUE(pm2.run(g2).ok());
    EXPECT_FALSE(w2->has_attr("packed_rows")) << key;
  }
}

}  // namespace
}  // namespace kiln
