// tests/unit/kernels_test.cpp — the C kernel templates (codegen/kernels) against the
// reference interpreter.
//
// In the style of ggml's test-backend-ops: each kernel runs on random inputs of many
// shapes (odd T, T = 1, K a multiple of 32 or not, several heads and streams), for every
// weight storage type, split over nth = 1..3 threads (the tids run one after another, and
// again on real threads), and its output is compared with a one-op graph run by
// ir::Interpreter. The measure is the normalized mean squared error
//
//   NMSE = sum (kernel - ref)^2 / sum ref^2
//
// with a bound per kernel, documented where it is set. The kernels here are the native
// build of the same sources that become kiln's bitcode (kiln_kernels_native).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <thread>

#include "codegen/kernels/kernel_bitcode.h"
#include "codegen/kernels/kernels.h"
#include "frontend/gguf_writer.h"
#include "ir/interpreter.h"
#include "ir/packing.h"
#include "ir/verifier.h"

#include "tests/unit/numeric.h"

extern "C" void kiln_test_expf(const float* x, float* scalar, float* lanes, int64_t n);

namespace kiln {
namespace {

using testing::nmse;
using testing::random_floats;
using testing::random_ints;
using testing::same_bits;


using Attrs = std::map<std::string, Attr, std::less<>>;

// ---- running kernels -------------------------------------------------------------------

struct Schedule {
  int nth;
  bool threads;  // real std::threads, or every tid in turn on this thread
};
const Schedule kSchedules[] = {{1, false}, {2, false}, {3, false}, {2, true}, {3, true}};

std::string describe(const Schedule& s) {
  return fmt::format("nth={}{}", s.nth, s.threads ? " threaded" : " sequential");
}

void run_split(const Schedule& s, const std::function<void(int32_t, int32_t)>& fn) {
  if (!s.threads) {
    for (int t = 0; t < s.nth; ++t) fn(t, s.nth);
    return;
  }
  std::vector<std::thread> ts;
  for (int t = 0; t < s.nth; ++t) ts.emplace_back(fn, t, s.nth);
  for (auto& t : ts) t.join();
}

// ---- data and comparison ---------------------------------------------------------------

// The largest NMSE a test saw, reported as a test property (in --gtest_output=xml).
struct Worst {
  double nmse = 0;
  double operator()(double e) { nmse = std::max(nmse, e); return e; }
  ~Worst() { ::testing::Test::RecordProperty("worst_nmse", fmt::format("{:.3g}", nmse)); }
};

// Equal values (so +0 == -0: the kernels compute (q - 8) * d as q * d - 8d, which gives
// +0 where the interpreter's product gives -0 for a negative scale).
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  return a == b;
}

// ---- one-op graphs ---------------------------------------------------------------------

// Weight bytes kept in memory, served to the interpreter by name.
class TestWeights final : public WeightSource {
 public:
  const std::string& put(const std::string& name, DType dt, std::vector<int64_t> shape,
                         std::string bytes) {
    Entry& e = data_[name];
    e = {dt, std::move(shape), std::move(bytes)};
    return e.bytes;
  }
  std::optional<WeightView> find(std::string_view name) const override {
    auto it = data_.find(name);
    if (it == data_.end()) return std::nullopt;
    const Entry& e = it->second;
    return WeightView{e.dtype, e.shape, reinterpret_cast<const uint8_t*>(e.bytes.data()),
                      e.bytes.size()};
  }
  std::string describe() const override { return "kernels_test"; }

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::map<std::string, Entry, std::less<>> data_;
};

Node* input(Graph& g, const std::string& name, DType dt, std::vector<int64_t> shape) {
  return g.add(Op::Input, {}, {dt, std::move(shape)}, {{"name", name}});
}

Node* constant(Graph& g, std::vector<int64_t> shape, const std::vector<float>& v) {
  DenseData d;
  d.dtype = DType::F32;
  d.f32 = v;
  return g.add(Op::Constant, {}, {DType::F32, std::move(shape)}, {{"value", d}});
}

// A weight node for values stored as `dt`; f32 weights are constants in the IR. Returns
// the node and the bytes the kernel reads (the same bytes the interpreter reads).
struct WeightNode {
  Node* node;
  const void* data;
};
WeightNode weight(Graph& g, TestWeights& ws, DType dt, std::vector<int64_t> shape,
                  const std::vector<float>& values) {
  if (dt == DType::F32) {
    Node* c = constant(g, shape, values);
    return {c, c->dense_attr("value")->f32.data()};
  }
  const std::string& bytes = ws.put("w", dt, shape, encode_tensor_data(dt, values));
  return {g.add(Op::Weight, {}, {dt, std::move(shape)}, {{"name", std::string("w")}}),
          bytes.data()};
}

Tensor f32_tensor(std::vector<int64_t> shape, std::vector<float> v) {
  return Tensor::f32_of(std::move(shape), std::move(v));
}
Tensor i32_tensor(std::vector<int32_t> v) {
  int64_t n = (int64_t)v.size();
  return Tensor::i32_of({n}, std::move(v));
}

// Adds `op` on `operands`, marks it the output "y", verifies and runs the graph.
std::vector<float> reference(Graph& g, Op op, std::vector<Node*> operands, Attrs attrs,
                             const std::map<std::string, Tensor>& inputs) {
  auto n = g.build(op, std::move(operands), std::move(attrs));
  EXPECT_TRUE(n.ok()) << n.error().message;
  if (!n.ok()) return {};
  auto out = g.build(Op::Output, {*n}, {{"name", std::string("y")}});
  EXPECT_TRUE(out.ok());
  Status v = verify(g);
  EXPECT_TRUE(v.ok()) << v.error().message;
  Interpreter interp(g);
  auto r = interp.run(inputs);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok()) return {};
  return r->at("y").f32;
}

// ---- weight types ----------------------------------------------------------------------

using MatmulFn = void (*)(const float*, const void*, float*, int64_t, int64_t, int64_t,
                          int32_t, int32_t);
using EmbedFn = void (*)(const void*, const int32_t*, float*, int64_t, int64_t, int32_t,
                         int32_t);
struct WeightType {
  DType dtype;
  MatmulFn matmul;
  EmbedFn embed;
};
const WeightType kWeightTypes[] = {
#define KILN_TEST_WEIGHT_TYPE(wt) {*dtype_from_name(#wt), kiln_matmul_##wt, kiln_embed_##wt},
    KILN_WEIGHT_TYPES(KILN_TEST_WEIGHT_TYPE)
#undef KILN_TEST_WEIGHT_TYPE
};

// Every weight dtype of ir/dtypes.def (all but i32) has kernels: a dtype added there
// without kernels fails here.
TEST(Kernels, EveryWeightDtypeHasKernels) {
  const DType all[] = {
#define KILN_DTYPE(E, name, ggml, be, bb) DType::E,
#include "ir/dtypes.def"
  };
  for (DType dt : all) {
    if (dt == DType::I32) continue;
    bool found = std::any_of(std::begin(kWeightTypes), std::end(kWeightTypes),
                             [&](const WeightType& w) { return w.dtype == dt; });
    EXPECT_TRUE(found) << "no kiln_matmul_/kiln_embed_ kernels for " << dtype_name(dt);
  }
}

// The embedded bitcode (what codegen links) is there for both targets and names every
// kernel of kernels.h; unknown architectures get nothing.
TEST(Kernels, BitcodeIsEmbeddedForEachTarget) {
  const char* names[] = {
#define KILN_TEST_NAMES(wt) "kiln_embed_" #wt, "kiln_matmul_" #wt,
      KILN_WEIGHT_TYPES(KILN_TEST_NAMES)
#undef KILN_TEST_NAMES
      "kiln_rms_norm", "kiln_add", "kiln_mul", "kiln_silu", "kiln_rope", "kiln_gather_rows",
      "kiln_last_row", "kiln_kv_write", "kiln_attention", "kiln_kv_write_f16", "kiln_attention_f16",
      "kiln_kv_write_tree_f16", "kiln_tree_attention_f16"};
  for (std::string_view arch : {"x86_64", "aarch64"}) {
    SCOPED_TRACE(arch);
    std::string_view bc = kernel_bitcode(arch);
    const std::vector<std::string> isas =
        arch == "x86_64" ? std::vector<std::string>{"ref", "avx2", "avxvnni", "vnni"}
                         : std::vector<std::string>{"ref", "dotprod", "i8mm"};
    for (const std::string& isa : isas)
      for (const char* wt : {"q4_0", "q4_1", "q8_0"})
        EXPECT_NE(bc.find(fmt::format("kiln_matmul_{}_q8_{}", wt, isa)), std::string_view::npos)
            << wt << " " << isa;
    ASSERT_GT(bc.size(), 1000u);
    EXPECT_EQ(bc.substr(0, 4), std::string_view("BC\xC0\xDE", 4));  // bitcode magic
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bc.data()) % 16, 0u);
    for (const char* n : names) EXPECT_NE(bc.find(n), std::string_view::npos) << n;
    // The triple it was compiled for is in the module.
    EXPECT_NE(bc.find(std::string(arch) + "-unknown-linux-gnu"), std::string_view::npos);
  }
  EXPECT_TRUE(kernel_bitcode("riscv64").empty());
  EXPECT_TRUE(kernel_bitcode("").empty());
}

// ---- embed -----------------------------------------------------------------------------

// Embedding rows are decoded to exactly the interpreter's dequantize_row values (see
// kiln_load_block: each is the exact value rounded once, with or without FMA), so the
// bound is equality.
TEST(Kernels, EmbedMatchesInterpreter) {
  std::mt19937 rng(11);
  for (const WeightType& wt : kWeightTypes) {
    for (int64_t D : {32, 96, 576, 7, 45}) {
      if (is_quantized(wt.dtype) && D % 32) continue;
      for (int64_t T : {1, 4, 7}) {
        const int64_t V = 50;
        SCOPED_TRACE(fmt::format("{} T={} D={}", dtype_name(wt.dtype), T, D));
        auto table = random_floats(rng, V * D);
        auto tokens = random_ints(rng, T, 0, V - 1);
        tokens[0] = V - 1;
        Graph g;
        auto ws = std::make_shared<TestWeights>();
        WeightNode w = weight(g, *ws, wt.dtype, {V, D}, table);
        g.set_weights(ws);
        Node* tok = input(g, "tokens", DType::I32, {kDynamic});
        auto ref = reference(g, Op::Embed, {w.node, tok}, {}, {{"tokens", i32_tensor(tokens)}});
        for (const Schedule& s : kSchedules) {
          std::vector<float> y((size_t)(T * D), NAN);
          run_split(s, [&](int32_t tid, int32_t nth) {
            wt.embed(w.data, tokens.data(), y.data(), T, D, tid, nth);
          });
          EXPECT_TRUE(same_values(y, ref)) << describe(s);
        }
      }
    }
  }
}

// ---- matmul ----------------------------------------------------------------------------

// Bound: NMSE < 1e-11. Both sides read the same dequantized weights; the kernel sums in
// float (eight-lane partial sums per 32-block, one add per block into the row's
// accumulator) where the interpreter folds eight float partials in double. For random
// data the relative error of a dot product is ~sqrt(K/32) * 6e-8, an NMSE of ~1e-14 at
// K = 576; 1e-11 leaves room while still catching any wrong element (a single
// mis-dequantized weight shows up as > 1e-6).
TEST(Kernels, MatmulMatchesInterpreter) {
  struct Shape { int64_t T, K, N; };
  const Shape shapes[] = {{1, 32, 1},   {1, 576, 100}, {2, 64, 17},  {3, 96, 33},
                          {4, 32, 16},  {5, 128, 40},  {7, 64, 5},   {8, 96, 48},
                          {9, 32, 31},  {13, 160, 20}, {17, 64, 64}, {1, 7, 9},
                          {3, 45, 18},  {6, 100, 35},  {11, 33, 3}};
  std::mt19937 rng(7);
  Worst worst;
  for (const WeightType& wt : kWeightTypes) {
    for (const Shape& sh : shapes) {
      const auto [T, K, N] = sh;
      if (is_quantized(wt.dtype) && K % 32) continue;
      SCOPED_TRACE(fmt::format("{} T={} K={} N={}", dtype_name(wt.dtype), T, K, N));
      auto wv = random_floats(rng, N * K, 1.0f / std::sqrt((float)K));
      auto x = random_floats(rng, T * K);
      Graph g;
      auto ws = std::make_shared<TestWeights>();
      WeightNode w = weight(g, *ws, wt.dtype, {N, K}, wv);
      g.set_weights(ws);
      Node* xn = input(g, "x", DType::F32, {kDynamic, K});
      auto ref = reference(g, Op::MatMul, {xn, w.node}, {}, {{"x", f32_tensor({T, K}, x)}});

      std::vector<float> first;
      for (const Schedule& s : kSchedules) {
        std::vector<float> y((size_t)(T * N), NAN);
        run_split(s, [&](int32_t tid, int32_t nth) {
          wt.matmul(x.data(), w.data, y.data(), T, K, N, tid, nth);
        });
        EXPECT_LT(worst(nmse(y, ref)), 1e-11) << describe(s);
        // The partition never changes the arithmetic.
        if (first.empty()) first = y;
        EXPECT_TRUE(same_bits(y, first)) << describe(s) << " differs from nth=1";
      }
      // Nor does the step's row count: each row alone gives the same bits (S streams in
      // one step == S single steps; a DS2D verify step == plain decoding).
      for (int64_t t = 0; t < T; ++t) {
        std::vector<float> row((size_t)N, NAN);
        wt.matmul(x.data() + t * K, w.data, row.data(), 1, K, N, 0, 1);
        EXPECT_TRUE(same_bits(row, std::vector<float>(first.begin() + t * N,
                                                      first.begin() + (t + 1) * N)))
            << "row " << t << " computed alone";
      }
    }
  }
}

// ---- matmul with int8 activations (qmatmul.c) ------------------------------------------

// The int8-activation variants of kernels.h, with whether this CPU can run them.
struct QMatmul {
  DType dtype;
  const char* isa;
  MatmulFn fn;
  bool runs;
};
bool cpu_has(std::string_view isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == "avxvnni") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
  if (isa == "vnni")
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw");
#endif
  return isa == "ref";
}
std::vector<QMatmul> qmatmul_variants() {
  std::vector<QMatmul> v;
  auto add = [&](const char* wt, const char* isa, MatmulFn fn) {
    v.push_back({*dtype_from_name(wt), isa, fn, cpu_has(isa)});
  };
#define KILN_TEST_QMM(wt, isa, attr) add(#wt, #isa, kiln_matmul_##wt##_q8_##isa);
  KILN_QUANT_WEIGHT_TYPES(KILN_TEST_QMM, ref, )
#if defined(__x86_64__)
  KILN_QUANT_WEIGHT_TYPES(KILN_TEST_QMM, avx2, )
  KILN_QUANT_WEIGHT_TYPES(KILN_TEST_QMM, avxvnni, )
  KILN_QUANT_WEIGHT_TYPES(KILN_TEST_QMM, vnni, )
#endif
#if defined(__aarch64__)
  KILN_QUANT_WEIGHT_TYPES(KILN_TEST_QMM, dotprod, )
#endif
#undef KILN_TEST_QMM
  return v;
}

// Bound: NMSE < 1e-4 against the interpreter's float-activation matmul. Each activation
// block of 32 is rounded to int8 with step d = max|x|/127, an error uniform in +-d/2
// (variance d^2/12); for Gaussian x, max|x| ~ 2.1 sigma over 32 values, so the error of
// a dot product with any weights is ~(2.1/127)^2/12 = 2.3e-5 of its variance: the NMSE
// measured here is 1.8e-5..4.5e-5 per shape (q8_0 weights add nothing: their products
// are exact in int32). 1e-4 leaves room for the spread over shapes and still fails on any
// wrong block (a wrong scale or nibble order gives NMSE > 1e-2). With fewer than 16
// outputs the ratio is one or two dot products' luck (9e-5 seen for T=1, K=32, N=1):
// 1e-3 there. Every variant gives the bits of the
// portable one (_q8_ref: the same exact int32 lane sums, the same float arithmetic), for
// every nth and each row alone. K = 1536 with T = 40 crosses the 64 KB stack chunk
// (34 rows at that K).
TEST(Kernels, Int8ActivationMatmulMatchesInterpreter) {
  struct Shape { int64_t T, K, N; };
  const Shape shapes[] = {{1, 32, 1},  {1, 576, 100}, {2, 64, 17}, {3, 96, 33}, {5, 128, 40},
                          {8, 96, 48}, {9, 32, 31},   {13, 160, 20}, {17, 64, 64},
                          {40, 1536, 24}};
  const auto variants = qmatmul_variants();
  std::mt19937 rng(17);
  Worst worst;
  int ran = 0;
  for (DType dt : {DType::Q4_0, DType::Q4_1, DType::Q8_0}) {
    for (const Shape& sh : shapes) {
      const auto [T, K, N] = sh;
      SCOPED_TRACE(fmt::format("{} T={} K={} N={}", dtype_name(dt), T, K, N));
      const double bound = T * N >= 16 ? 1e-4 : 1e-3;
      auto wv = random_floats(rng, N * K, 1.0f / std::sqrt((float)K));
      auto x = random_floats(rng, T * K);
      Graph g;
      auto ws = std::make_shared<TestWeights>();
      WeightNode w = weight(g, *ws, dt, {N, K}, wv);
      g.set_weights(ws);
      Node* xn = input(g, "x", DType::F32, {kDynamic, K});
      auto ref = reference(g, Op::MatMul, {xn, w.node}, {}, {{"x", f32_tensor({T, K}, x)}});
      std::vector<float> portable;
      for (const QMatmul& v : variants) {
        if (v.dtype != dt || !v.runs) continue;
        SCOPED_TRACE(v.isa);
        ++ran;
        std::vector<float> first;
        for (const Schedule& s : kSchedules) {
          std::vector<float> y((size_t)(T * N), NAN);
          run_split(s, [&](int32_t tid, int32_t nth) {
            v.fn(x.data(), w.data, y.data(), T, K, N, tid, nth);
          });
          EXPECT_LT(worst(nmse(y, ref)), bound) << describe(s);
          if (first.empty()) first = y;
          EXPECT_TRUE(same_bits(y, first)) << describe(s) << " differs from nth=1";
        }
        if (portable.empty()) portable = first;  // "ref" comes first
        EXPECT_TRUE(same_bits(first, portable)) << "differs from the portable variant";
        for (int64_t t = 0; t < T; ++t) {
          std::vector<float> row((size_t)N, NAN);
          v.fn(x.data() + t * K, w.data, row.data(), 1, K, N, 0, 1);
          EXPECT_TRUE(same_bits(row, std::vector<float>(first.begin() + t * N,
                                                        first.begin() + (t + 1) * N)))
              << "row " << t << " computed alone";
        }
      }
    }
  }
  EXPECT_GT(ran, 0);
}

// ---- packed weights (pack-weights) ------------------------------------------------------

// The packed variants (kiln_matmul_<wt>x16_q8_<isa>, ir/packing.h) on weights packed by
// pack_rows. Bound: the same NMSE as the GGUF-row int8 kernels against the interpreter
// (1e-4: the int8 rounding of x dominates; their own float order adds ~1e-14). Every
// variant gives the portable one's bits, for every split and each row computed alone
// (a row's sums do not depend on how many rows share a pass over the weights: R = 1..4).
struct PackedVariant {
  DType dtype;
  std::string isa;
  MatmulFn matmul;
  bool runs;
};
std::vector<PackedVariant> packed_variants() {
  std::vector<PackedVariant> v;
#define KILN_TEST_PACKED(wt, isa, attr) \
  v.push_back({*dtype_from_name(std::string(#wt).substr(0, 4)), #isa, kiln_matmul_##wt##_q8_##isa, cpu_has(#isa)});
  KILN_PACKED_WEIGHT_TYPES(KILN_TEST_PACKED, ref, )
#if defined(__x86_64__)
  KILN_PACKED_WEIGHT_TYPES(KILN_TEST_PACKED, vnni, )
#endif
#undef KILN_TEST_PACKED
  return v;
}

std::string packed_bytes(DType dt, const void* gguf, int64_t N, int64_t K) {
  std::string out(dtype_bytes(dt, (uint64_t)(N * K)), '\0');
  pack_rows(dt, static_cast<const uint8_t*>(gguf), N, K, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

TEST(Kernels, PackedMatmulMatchesInterpreter) {
  struct Shape { int64_t T, K, N; };
  const Shape shapes[] = {{1, 32, 16}, {1, 576, 192}, {2, 64, 32}, {3, 96, 48}, {4, 128, 16},
                          {5, 160, 64}, {8, 1536, 32}, {13, 64, 48}, {40, 1536, 16}};
  const auto variants = packed_variants();
  std::mt19937 rng(23);
  Worst worst;
  int ran = 0;
  for (DType dt : {DType::Q4_0, DType::Q4_1, DType::Q8_0}) {
    for (const Shape& sh : shapes) {
      const auto [T, K, N] = sh;
      SCOPED_TRACE(fmt::format("{} T={} K={} N={}", dtype_name(dt), T, K, N));
      auto wv = random_floats(rng, N * K, 1.0f / std::sqrt((float)K));
      auto x = random_floats(rng, T * K);
      Graph g;
      auto ws = std::make_shared<TestWeights>();
      WeightNode w = weight(g, *ws, dt, {N, K}, wv);
      g.set_weights(ws);
      const std::string packed = packed_bytes(dt, w.data, N, K);
      Node* xn = input(g, "x", DType::F32, {kDynamic, K});
      auto ref = reference(g, Op::MatMul, {xn, w.node}, {}, {{"x", f32_tensor({T, K}, x)}});
      std::vector<float> portable;
      for (const PackedVariant& v : variants) {
        if (v.dtype != dt || !v.runs) continue;
        SCOPED_TRACE(v.isa);
        ++ran;
        std::vector<float> first;
        for (const Schedule& s : kSchedules) {
          std::vector<float> y((size_t)(T * N), NAN);
          run_split(s, [&](int32_t tid, int32_t nth) { v.matmul(x.data(), packed.data(), y.data(), T, K, N, tid, nth); });
          EXPECT_LT(worst(nmse(y, ref)), 1e-4) << describe(s);
          if (first.empty()) first = y;
          EXPECT_TRUE(same_bits(y, first)) << describe(s) << " differs from nth=1";
        }
        if (portable.empty()) portable = first;  // "ref" comes first
        EXPECT_TRUE(same_bits(first, portable)) << "differs from the portable variant";
        for (int64_t t = 0; t < T; ++t) {
          std::vector<float> row((size_t)N, NAN);
          v.matmul(x.data() + t * K, packed.data(), row.data(), 1, K, N, 0, 1);
          EXPECT_TRUE(same_bits(row, std::vector<float>(first.begin() + t * N, first.begin() + (t + 1) * N)))
              << "row " << t << " computed alone";
        }
      }
    }
  }
  EXPECT_GT(ran, 0);
}

// The fused forms on packed weights give the packed matmul's bits: rms_matmul = rms_norm
// kernel then matmul; matmul_swiglu = silu(gate) * up from the two matmuls' outputs.
TEST(Kernels, PackedFusedFormsMatchPackedMatmul) {
  std::mt19937 rng(29);
  const int64_t N = 48;
  // T = 13: more rows than one pass over a packed group takes (passes of 4, then 5).
  // K = 1536: rms_matmul normalises 5 rows at a time (KILN_QMM_NORM_FLOATS) within a
  // chunk of 31, so 13 rows are normalised in batches of 5, 5 and 3.
  for (int64_t K : {192, 1536})
  for (int64_t T : {6, 13})
  for (DType dt : {DType::Q4_0, DType::Q4_1, DType::Q8_0}) {
    SCOPED_TRACE(fmt::format("{} T={} K={}", dtype_name(dt), T, K));
    auto enc = [&](std::vector<float> v) { return encode_tensor_data(dt, v); };
    const std::string wg = enc(random_floats(rng, N * K, 0.1f)), wu = enc(random_floats(rng, N * K, 0.1f));
    const std::string pg = packed_bytes(dt, wg.data(), N, K), pu = packed_bytes(dt, wu.data(), N, K);
    auto x = random_floats(rng, T * K);
    auto nw = random_floats(rng, K);
    struct Fns { MatmulFn mm; decltype(&kiln_rms_matmul_q4_0x16_q8_ref) rms; decltype(&kiln_matmul_swiglu_q4_0x16_q8_ref) sw; };
    std::vector<std::pair<std::string, Fns>> fns;
#define KILN_TEST_FUSED(wt, isa, attr)                                                                   \
  if (std::string(#wt).substr(0, 4) == dtype_name(dt) && cpu_has(#isa))                                  \
    fns.push_back({#isa, {kiln_matmul_##wt##_q8_##isa, kiln_rms_matmul_##wt##_q8_##isa, kiln_matmul_swiglu_##wt##_q8_##isa}});
    KILN_PACKED_WEIGHT_TYPES(KILN_TEST_FUSED, ref, )
#if defined(__x86_64__)
    KILN_PACKED_WEIGHT_TYPES(KILN_TEST_FUSED, vnni, )
#endif
#undef KILN_TEST_FUSED
    ASSERT_FALSE(fns.empty());
    for (auto& [isa, f] : fns) {
      SCOPED_TRACE(isa);
      std::vector<float> xn((size_t)(T * K)), g((size_t)(T * N)), u((size_t)(T * N)), want((size_t)(T * N));
      kiln_rms_norm(x.data(), nw.data(), xn.data(), T, K, 1e-5f, 0, 1);
      std::vector<float> mm((size_t)(T * N)), rms((size_t)(T * N), NAN), sw((size_t)(T * N), NAN);
      f.mm(xn.data(), pg.data(), mm.data(), T, K, N, 0, 1);
      for (int nth : {1, 2, 3})
        for (int tid = 0; tid < nth; ++tid) f.rms(x.data(), nw.data(), pg.data(), rms.data(), T, K, N, 1e-5f, tid, nth);
      EXPECT_TRUE(same_bits(rms, mm)) << "rms_matmul";
      f.mm(x.data(), pg.data(), g.data(), T, K, N, 0, 1);
      f.mm(x.data(), pu.data(), u.data(), T, K, N, 0, 1);
      for (int nth : {1, 2, 3})
        for (int tid = 0; tid < nth; ++tid) f.sw(x.data(), pg.data(), pu.data(), sw.data(), T, K, N, tid, nth);
      for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(sw[i], g[i] / (1.0f + std::exp(-g[i])) * u[i], 1e-5f * (1 + std::fabs(sw[i])));
    }
  }
}

// matmul_swiglu's LoRA form (fuse-matmul-swiglu on a LoRA graph): gate and up get op
// lora's terms before the SiLU, with the bits of the unfused kernels (matmul, lora_add,
// silu, mul), for rows on different slots and ranks (0 on a side: nothing added), more
// rows than one chunk of shrinks holds, and any split over threads.
TEST(Kernels, PackedSwigluWithLoraMatchesTheUnfusedKernels) {
  std::mt19937 rng(37);
  const int64_t N = 48, K = 192, S = 3, R = 8;
  const std::vector<float> scale = {0.0f, 1.5f, -0.7f};
  const std::vector<int32_t> rank_g = {0, 5, 8}, rank_u = {0, 0, 8};
  const auto ag = random_floats(rng, S * R * K, 0.2f), bg = random_floats(rng, S * R * N, 0.2f);
  const auto au = random_floats(rng, S * R * K, 0.2f), bu = random_floats(rng, S * R * N, 0.2f);
  for (int64_t T : {6, 13, 37})
  for (DType dt : {DType::Q4_0, DType::Q4_1, DType::Q8_0}) {
    SCOPED_TRACE(fmt::format("{} T={}", dtype_name(dt), T));
    auto enc = [&](std::vector<float> v) { return encode_tensor_data(dt, v); };
    const std::string pg = packed_bytes(dt, enc(random_floats(rng, N * K, 0.1f)).data(), N, K);
    const std::string pu = packed_bytes(dt, enc(random_floats(rng, N * K, 0.1f)).data(), N, K);
    const auto x = random_floats(rng, T * K);
    const auto slots = random_ints(rng, T, 0, (int)S - 1);
    struct Fns { MatmulFn mm; decltype(&kiln_matmul_swiglu_lora_q4_0x16_q8_ref) sw; };
    std::vector<std::pair<std::string, Fns>> fns;
#define KILN_TEST_SWIGLU_LORA(wt, isa, attr)                                    \
  if (std::string(#wt).substr(0, 4) == dtype_name(dt) && cpu_has(#isa))         \
    fns.push_back({#isa, {kiln_matmul_##wt##_q8_##isa, kiln_matmul_swiglu_lora_##wt##_q8_##isa}});
    KILN_PACKED_WEIGHT_TYPES(KILN_TEST_SWIGLU_LORA, ref, )
#if defined(__x86_64__)
    KILN_PACKED_WEIGHT_TYPES(KILN_TEST_SWIGLU_LORA, vnni, )
#endif
#undef KILN_TEST_SWIGLU_LORA
    ASSERT_FALSE(fns.empty());
    for (auto& [isa, f] : fns) {
      SCOPED_TRACE(isa);
      const size_t n = (size_t)(T * N);
      std::vector<float> g(n), u(n), gl(n), ul(n), sg(n), want(n);
      f.mm(x.data(), pg.data(), g.data(), T, K, N, 0, 1);
      f.mm(x.data(), pu.data(), u.data(), T, K, N, 0, 1);
      kiln_lora_add(x.data(), ag.data(), bg.data(), scale.data(), slots.data(), rank_g.data(), g.data(), gl.data(), T, K, N, R, 0, 1);
      kiln_lora_add(x.data(), au.data(), bu.data(), scale.data(), slots.data(), rank_u.data(), u.data(), ul.data(), T, K, N, R, 0, 1);
      EXPECT_FALSE(same_bits(gl, g)) << "the side paths add nothing: the check below would prove little";
      kiln_silu(gl.data(), sg.data(), (int64_t)n, 0, 1);
      kiln_mul(sg.data(), ul.data(), want.data(), (int64_t)n, (int64_t)n, 0, 1);
      for (int nth : {1, 2, 3}) {
        std::vector<float> got(n, NAN);
        for (int tid = 0; tid < nth; ++tid)
          f.sw(x.data(), pg.data(), pu.data(), ag.data(), bg.data(), au.data(), bu.data(), scale.data(), slots.data(),
               rank_g.data(), rank_u.data(), got.data(), T, K, N, R, tid, nth);
        EXPECT_TRUE(same_bits(got, want)) << nth << " threads";
      }
    }
  }
}

// A packed embedding table gives the GGUF table's rows bit for bit (the tied LM head).
TEST(Kernels, PackedEmbedMatchesGgufRows) {
  std::mt19937 rng(31);
  const int64_t V = 48, D = 96, T = 7;
  using Embed = void (*)(const void*, const int32_t*, float*, int64_t, int64_t, int32_t, int32_t);
  const std::pair<DType, std::pair<Embed, Embed>> cases[] = {
      {DType::Q4_0, {kiln_embed_q4_0, kiln_embed_q4_0x16}},
      {DType::Q4_1, {kiln_embed_q4_1, kiln_embed_q4_1x16}},
      {DType::Q8_0, {kiln_embed_q8_0, kiln_embed_q8_0x16}}};
  for (const auto& [dt, fn] : cases) {
    SCOPED_TRACE(dtype_name(dt));
    const std::string table = encode_tensor_data(dt, random_floats(rng, V * D));
    const std::string packed = packed_bytes(dt, table.data(), V, D);
    auto tokens = random_ints(rng, T, 0, V - 1);
    tokens[0] = V - 1;
    std::vector<float> want((size_t)(T * D)), got((size_t)(T * D), NAN);
    fn.first(table.data(), tokens.data(), want.data(), T, D, 0, 1);
    for (int tid = 0; tid < 2; ++tid) fn.second(packed.data(), tokens.data(), got.data(), T, D, tid, 2);
    EXPECT_TRUE(same_bits(got, want));
  }
}

// ---- rms_norm --------------------------------------------------------------------------

// Bound: NMSE < 1e-12. Float sum of squares (16 lanes) against a double sum; the scale is
// taken in double on both sides and the products are the same float products.
TEST(Kernels, RmsNormMatchesInterpreter) {
  std::mt19937 rng(3);
  Worst worst;
  for (int64_t D : {8, 45, 576, 1}) {
    for (int64_t T : {1, 3, 8}) {
      SCOPED_TRACE(fmt::format("T={} D={}", T, D));
      auto x = random_floats(rng, T * D, 3.0f);
      auto w = random_floats(rng, D);
      const float eps = 1e-5f;
      Graph g;
      Node* xn = input(g, "x", DType::F32, {kDynamic, D});
      auto ref = reference(g, Op::RmsNorm, {xn, constant(g, {D}, w)}, {{"eps", (double)eps}},
                           {{"x", f32_tensor({T, D}, x)}});
      for (const Schedule& s : kSchedules) {
        std::vector<float> y((size_t)(T * D), NAN);
        run_split(s, [&](int32_t tid, int32_t nth) {
          kiln_rms_norm(x.data(), w.data(), y.data(), T, D, eps, tid, nth);
        });
        EXPECT_LT(worst(nmse(y, ref)), 1e-12) << describe(s);
      }
      // In place.
      std::vector<float> y = x;
      kiln_rms_norm(y.data(), w.data(), y.data(), T, D, eps, 0, 1);
      EXPECT_LT(nmse(y, ref), 1e-12) << "in place";
    }
  }
}

// ---- add, mul --------------------------------------------------------------------------

// One float add or multiply per element on both sides: exact.
TEST(Kernels, AddAndMulMatchInterpreter) {
  std::mt19937 rng(5);
  for (Op op : {Op::Add, Op::Mul}) {
    for (int64_t F : {1, 7, 16, 45, 576}) {
      for (int64_t T : {1, 3, 9}) {
        for (bool broadcast : {false, true}) {
          SCOPED_TRACE(fmt::format("{} T={} F={} broadcast={}", op_name(op), T, F, broadcast));
          const int64_t n = T * F, bn = broadcast ? F : n;
          auto a = random_floats(rng, n), b = random_floats(rng, bn);
          Graph g;
          Node* an = input(g, "a", DType::F32, {kDynamic, F});
          Node* bnode = broadcast ? input(g, "b", DType::F32, {F})
                                  : input(g, "b", DType::F32, {kDynamic, F});
          auto ref = reference(g, op, {an, bnode}, {},
                               {{"a", f32_tensor({T, F}, a)},
                                {"b", broadcast ? f32_tensor({F}, b) : f32_tensor({T, F}, b)}});
          auto fn = op == Op::Add ? kiln_add : kiln_mul;
          for (const Schedule& s : kSchedules) {
            std::vector<float> y((size_t)n, NAN);
            run_split(s, [&](int32_t tid, int32_t nth) {
              fn(a.data(), b.data(), y.data(), n, bn, tid, nth);
            });
            EXPECT_TRUE(same_bits(y, ref)) << describe(s);
          }
          std::vector<float> y = a;  // in place
          fn(y.data(), b.data(), y.data(), n, bn, 0, 1);
          EXPECT_TRUE(same_bits(y, ref)) << "in place";
        }
      }
    }
  }
}

// ---- silu and the exp approximation ----------------------------------------------------

// Bound: NMSE < 1e-13 on N(0, 4) inputs (kiln_expf's relative error is < 2e-7, then one
// add and one divide in float, against the interpreter's double).
TEST(Kernels, SiluMatchesInterpreter) {
  std::mt19937 rng(9);
  Worst worst;
  for (int64_t n : {1, 15, 16, 100, 1537}) {
    SCOPED_TRACE(fmt::format("n={}", n));
    auto x = random_floats(rng, n, 4.0f);
    Graph g;
    Node* xn = input(g, "x", DType::F32, {kDynamic, 1});
    auto ref = reference(g, Op::Silu, {xn}, {}, {{"x", f32_tensor({n, 1}, x)}});
    for (const Schedule& s : kSchedules) {
      std::vector<float> y((size_t)n, NAN);
      run_split(s, [&](int32_t tid, int32_t nth) { kiln_silu(x.data(), y.data(), n, tid, nth); });
      EXPECT_LT(worst(nmse(y, ref)), 1e-13) << describe(s);
    }
  }
}

// kiln_expf over its whole range, through silu: for x < 0, silu(x) = x / (1 + e^-x) has
// the relative error of e^|x| plus two roundings, so a per-element relative error below
// 1e-6 over [-87, 0] bounds the exp approximation to ~2e-7 (ulp-level: 1 ulp = 6e-8 to
// 1.2e-7). For x in (0, 87] the sigmoid is 1/(1 + tiny): errors shrink. Beyond: e^x
// saturates at 2.4e38, so silu(-100) is a tiny negative number instead of -3.7e-42.
TEST(Kernels, ExpApproximationIsAccurateOverItsRange) {
  std::vector<float> x;
  for (double v = -87.0; v <= 87.0; v += 0.0137) x.push_back((float)v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 87.3f, -87.3f}) x.push_back(v);
  std::vector<float> y(x.size());
  kiln_silu(x.data(), y.data(), (int64_t)x.size(), 0, 1);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double ref = (double)x[i] / (1.0 + std::exp(-(double)x[i]));
    double rel = ref == 0 ? std::fabs(y[i]) : std::fabs((y[i] - ref) / ref);
    worst = std::max(worst, rel);
    ASSERT_LT(rel, 1e-6) << "silu(" << x[i] << ") = " << y[i] << ", expected " << ref;
  }
  RecordProperty("worst_relative_error", fmt::format("{:.3g}", worst));
  const float far[] = {-100.0f, -1000.0f, 100.0f, 1e30f, INFINITY};
  float fy[5];
  kiln_silu(far, fy, 5, 0, 1);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(fy[i] <= 0.0f && fy[i] > -1e-35f) << far[i];
  EXPECT_EQ(fy[2], 100.0f);
  EXPECT_EQ(fy[3], 1e30f);
  EXPECT_EQ(fy[4], INFINITY);
  float nan_in = NAN, nan_out = 0;
  kiln_silu(&nan_in, &nan_out, 1, 0, 1);
  EXPECT_TRUE(std::isnan(nan_out));
}

// attention's softmax takes sixteen exps at a time (kiln_expf16) and the rest one by one
// (kiln_expf): the two must give the same bits everywhere, or a row's weights would depend
// on where the 16-lane part ends.
TEST(Kernels, SixteenLaneExpHasTheScalarBits) {
  std::vector<float> x;
  for (double v = -100.0; v <= 100.0; v += 0.00731) x.push_back((float)v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.37f, 88.38f, -87.5f, -87.3365448f, -87.34f, 1e30f,
                  -1e30f, INFINITY, -INFINITY, NAN, -NAN, std::numeric_limits<float>::denorm_min()})
    x.push_back(v);
  std::mt19937 rng(7);
  for (int i = 0; i < 4096; ++i) {
    uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    x.push_back(f);  // any bit pattern: NaNs with payloads, denormals, huge values
  }
  while (x.size() % 16) x.push_back(1.0f);
  std::vector<float> scalar(x.size()), lanes(x.size());
  kiln_test_expf(x.data(), scalar.data(), lanes.data(), (int64_t)x.size());
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_TRUE(std::memcmp(&scalar[i], &lanes[i], 4) == 0 || (std::isnan(scalar[i]) && std::isnan(lanes[i])))
        << "exp(" << x[i] << "): scalar " << scalar[i] << ", 16 lanes " << lanes[i];
}

// ---- rope ------------------------------------------------------------------------------

// Bound: NMSE < 1e-13. Angles, cos and sin are double on both sides (kiln's own
// polynomials against libm), the rotation is float in the kernel and double in the
// interpreter: a few ulp per element. Positions up to 60000 check the range reduction.
TEST(Kernels, RopeMatchesInterpreter) {
  struct Shape { int64_t T, heads, hd, nrot; float theta; bool factors; };
  const Shape shapes[] = {{1, 1, 8, 8, 10000.0f, false},    {5, 3, 64, 64, 10000.0f, false},
                          {4, 2, 64, 32, 500000.0f, false}, {7, 9, 64, 64, 100000.0f, false},
                          {3, 2, 16, 2, 10000.0f, false},   {2, 4, 12, 6, 1e6f, false},
                          {5, 3, 64, 64, 500000.0f, true},  {3, 2, 64, 32, 10000.0f, true}};
  std::mt19937 rng(13);
  Worst worst;
  for (const Shape& sh : shapes) {
    const int64_t F = sh.heads * sh.hd;
    SCOPED_TRACE(fmt::format("T={} heads={} hd={} nrot={} theta={} factors={}", sh.T, sh.heads, sh.hd,
                             sh.nrot, sh.theta, sh.factors));
    auto x = random_floats(rng, sh.T * F);
    auto pos = random_ints(rng, sh.T, 0, 4096);  // out of order
    pos[0] = sh.T > 1 ? 60000 : 0;
    // LLaMA 3's kind of factors: 1 for the high frequencies, up to 8 for the low ones.
    std::vector<float> factors((size_t)(sh.nrot / 2));
    for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + 7.0f * (float)i / (float)factors.size();
    Graph g;
    Node* xn = input(g, "x", DType::F32, {kDynamic, F});
    Node* pn = input(g, "pos", DType::I32, {kDynamic});
    std::vector<Node*> operands = {xn, pn};
    std::map<std::string, Tensor> feeds = {{"x", f32_tensor({sh.T, F}, x)}, {"pos", i32_tensor(pos)}};
    if (sh.factors) {
      operands.push_back(input(g, "factors", DType::F32, {sh.nrot / 2}));
      feeds.emplace("factors", f32_tensor({sh.nrot / 2}, factors));
    }
    auto ref = reference(g, Op::Rope, operands, {{"head_dim", sh.hd}, {"n_rot", sh.nrot}, {"theta", (double)sh.theta}},
                         feeds);
    const float* fp = sh.factors ? factors.data() : nullptr;
    for (const Schedule& s : kSchedules) {
      std::vector<float> y((size_t)(sh.T * F), NAN);
      run_split(s, [&](int32_t tid, int32_t nth) {
        kiln_rope(x.data(), y.data(), pos.data(), sh.T, F, sh.hd, sh.nrot, sh.theta, fp, tid, nth);
      });
      EXPECT_LT(worst(nmse(y, ref)), 1e-13) << describe(s);
      // Dimensions past n_rot pass through untouched.
      for (int64_t t = 0; t < sh.T; ++t)
        for (int64_t h = 0; h < sh.heads; ++h)
          for (int64_t d = sh.nrot; d < sh.hd; ++d) {
            size_t i = (size_t)(t * F + h * sh.hd + d);
            ASSERT_EQ(y[i], x[i]);
          }
    }
    std::vector<float> y = x;  // in place
    kiln_rope(y.data(), y.data(), pos.data(), sh.T, F, sh.hd, sh.nrot, sh.theta, fp, 0, 1);
    EXPECT_LT(nmse(y, ref), 1e-13) << "in place";
    if (sh.factors) {  // the factors change the result
      std::vector<float> plain((size_t)(sh.T * F));
      kiln_rope(x.data(), plain.data(), pos.data(), sh.T, F, sh.hd, sh.nrot, sh.theta, nullptr, 0, 1);
      EXPECT_GT(nmse(plain, ref), 1e-6);
    }
  }
}

// ---- row copies ------------------------------------------------------------------------

TEST(Kernels, GatherRowsAndLastRowMatchInterpreter) {
  std::mt19937 rng(17);
  for (int64_t F : {1, 9, 576}) {
    for (int64_t T : {1, 6}) {
      SCOPED_TRACE(fmt::format("T={} F={}", T, F));
      auto x = random_floats(rng, T * F);
      auto rows = random_ints(rng, 5, 0, (int32_t)T - 1);
      Graph g1;
      Node* x1 = input(g1, "x", DType::F32, {kDynamic, F});
      Node* r1 = input(g1, "rows", DType::I32, {kDynamic});
      auto ref = reference(g1, Op::GatherRows, {x1, r1}, {},
                           {{"x", f32_tensor({T, F}, x)}, {"rows", i32_tensor(rows)}});
      Graph g2;
      Node* x2 = input(g2, "x", DType::F32, {kDynamic, F});
      auto ref_last = reference(g2, Op::LastRow, {x2}, {}, {{"x", f32_tensor({T, F}, x)}});
      for (const Schedule& s : kSchedules) {
        std::vector<float> y(5 * (size_t)F, NAN), last((size_t)F, NAN);
        run_split(s, [&](int32_t tid, int32_t nth) {
          kiln_gather_rows(x.data(), rows.data(), y.data(), 5, F, tid, nth);
          kiln_last_row(x.data(), last.data(), T, F, tid, nth);
        });
        EXPECT_TRUE(same_bits(y, ref)) << describe(s);
        EXPECT_TRUE(same_bits(last, ref_last)) << describe(s);
      }
    }
  }
}

// ---- kv_write and attention ------------------------------------------------------------

struct CacheShape {
  int64_t S, C, F;  // S = 0: a single-stream [C,F] cache without a streams operand
  std::vector<int64_t> dims() const { return S ? std::vector<int64_t>{S, C, F} : std::vector<int64_t>{C, F}; }
  int64_t floats() const { return (S ? S : 1) * C * F; }
};

// A copy: exact. The cache is the interpreter's state buffer, written in place.
TEST(Kernels, KvWriteMatchesInterpreter) {
  std::mt19937 rng(19);
  for (CacheShape cs : {CacheShape{0, 8, 12}, CacheShape{3, 16, 24}, CacheShape{2, 5, 576}}) {
    for (int64_t T : {1, 4}) {
      SCOPED_TRACE(fmt::format("S={} C={} F={} T={}", cs.S, cs.C, cs.F, T));
      auto x = random_floats(rng, T * cs.F);
      // Distinct (stream, position) pairs in random order (a step never writes one cache
      // row twice); rows 0 and 1 share a position in different streams.
      std::vector<int32_t> slots((size_t)((cs.S ? cs.S : 1) * cs.C));
      for (size_t i = 0; i < slots.size(); ++i) slots[i] = (int32_t)i;
      std::shuffle(slots.begin(), slots.end(), rng);
      if (cs.S && T > 1) {  // the slot with slot 0's position in the next stream
        int32_t next = (slots[0] / (int32_t)cs.C + 1) % (int32_t)cs.S * (int32_t)cs.C +
                       slots[0] % (int32_t)cs.C;
        std::iter_swap(slots.begin() + 1, std::find(slots.begin(), slots.end(), next));
      }
      std::vector<int32_t> pos, streams;
      for (int64_t t = 0; t < T; ++t) {
        streams.push_back(slots[(size_t)t] / (int32_t)cs.C);
        pos.push_back(slots[(size_t)t] % (int32_t)cs.C);
      }
      Graph g;
      Node* cache = g.add(Op::State, {}, {DType::F32, cs.dims()}, {{"name", std::string("k")}});
      Node* xn = input(g, "x", DType::F32, {kDynamic, cs.F});
      Node* pn = input(g, "pos", DType::I32, {kDynamic});
      std::vector<Node*> ops = {cache, xn, pn};
      std::map<std::string, Tensor> in = {{"x", f32_tensor({T, cs.F}, x)}, {"pos", i32_tensor(pos)}};
      if (cs.S) {
        ops.push_back(input(g, "streams", DType::I32, {kDynamic}));
        in["streams"] = i32_tensor(streams);
      }
      auto ref = reference(g, Op::KvWrite, ops, {}, in);
      for (const Schedule& s : kSchedules) {
        std::vector<float> c((size_t)cs.floats(), 0.0f);
        run_split(s, [&](int32_t tid, int32_t nth) {
          kiln_kv_write(c.data(), x.data(), pos.data(), cs.S ? streams.data() : nullptr, T, cs.F,
                        cs.C * cs.F, tid, nth);
        });
        EXPECT_TRUE(same_bits(c, ref)) << describe(s);
      }
    }
  }
}

// Bound: NMSE < 1e-12. Scores are float dot products (two 8-lane accumulators) against
// double ones, weights use kiln_expf (< 2e-7 relative) against libm's double exp, and the
// weighted sum of values is float: a few 1e-7 relative per output at these lengths.
TEST(Kernels, AttentionMatchesInterpreter) {
  struct Shape { int64_t S, C, H, KVH, hd, T; };
  const Shape shapes[] = {
      {0, 8, 1, 1, 8, 1},     // single stream, no streams operand
      {0, 40, 6, 2, 16, 5},   // GQA 3
      {3, 32, 4, 4, 64, 7},   // three streams, GQA 1
      {2, 70, 9, 3, 64, 4},   // SmolLM2's heads: GQA 3, hd 64
      {4, 20, 3, 1, 12, 9},   // hd not a multiple of 8
      {2, 33, 2, 2, 40, 1}};  // decode, one row
  std::mt19937 rng(23);
  Worst worst;
  for (const Shape& sh : shapes) {
    const int64_t F = sh.KVH * sh.hd, S1 = sh.S ? sh.S : 1;
    const CacheShape cs{sh.S, sh.C, F};
    SCOPED_TRACE(fmt::format("S={} C={} H={} KVH={} hd={} T={}", sh.S, sh.C, sh.H, sh.KVH,
                             sh.hd, sh.T));
    auto q = random_floats(rng, sh.T * sh.H * sh.hd);
    auto kc = random_floats(rng, cs.floats(), 2.0f), vc = random_floats(rng, cs.floats());
    // Positions out of order and well short of C, rows of several streams interleaved.
    auto pos = random_ints(rng, sh.T, 0, (int32_t)(sh.C * 3 / 4));
    pos[0] = (int32_t)sh.C - 1;
    if (sh.T > 2) pos[2] = 0;
    auto streams = random_ints(rng, sh.T, 0, (int32_t)S1 - 1);
    Graph g;
    Node* qn = input(g, "q", DType::F32, {kDynamic, sh.H * sh.hd});
    Node* kn = input(g, "kc", DType::F32, cs.dims());
    Node* vn = input(g, "vc", DType::F32, cs.dims());
    Node* pn = input(g, "pos", DType::I32, {kDynamic});
    std::vector<Node*> ops = {qn, kn, vn, pn};
    std::map<std::string, Tensor> in = {{"q", f32_tensor({sh.T, sh.H * sh.hd}, q)},
                                        {"kc", f32_tensor(cs.dims(), kc)},
                                        {"vc", f32_tensor(cs.dims(), vc)},
                                        {"pos", i32_tensor(pos)}};
    if (sh.S) {
      ops.push_back(input(g, "streams", DType::I32, {kDynamic}));
      in["streams"] = i32_tensor(streams);
    }
    auto ref = reference(g, Op::Attention, ops,
                         {{"n_head", sh.H}, {"n_kv_head", sh.KVH}, {"head_dim", sh.hd}}, in);
    std::vector<float> first;
    for (const Schedule& s : kSchedules) {
      std::vector<float> y((size_t)(sh.T * sh.H * sh.hd), NAN);
      std::vector<float> scratch((size_t)(s.nth * kiln_attention_heads_per_pass(sh.H, sh.KVH) * sh.C), NAN);
      run_split(s, [&](int32_t tid, int32_t nth) {
        kiln_attention(q.data(), kc.data(), vc.data(), pos.data(),
                       sh.S ? streams.data() : nullptr, y.data(), scratch.data(), sh.T, sh.C,
                       sh.H, sh.KVH, sh.hd, sh.C * F, tid, nth);
      });
      EXPECT_LT(worst(nmse(y, ref)), 1e-12) << describe(s);
      if (first.empty()) first = y;
      EXPECT_TRUE(same_bits(y, first)) << describe(s) << " differs from nth=1";
    }
  }
}

// An f16 cache (kv-type f16): kv_write rounds to nearest-even half, as the interpreter does
// for an f16 state buffer (exact: both round the same floats); attention widens the halves
// and runs the f32 code, so its result is the f32 kernel's on the widened cache, bit for
// bit, for causal and tree rows alike.
TEST(Kernels, F16CacheKernelsAreTheF32OnesOnHalves) {
  std::mt19937 rng(29);
  {
    const CacheShape cs{2, 9, 40};
    const int64_t T = 3;
    auto x = random_floats(rng, T * cs.F, 4.0f);
    x[0] = 65520.0f;       // rounds to inf in half
    x[1] = 1e-7f;          // a subnormal half
    x[2] = 1.0f + 0x1p-11f;  // a tie: to even
    std::vector<int32_t> pos = {8, 0, 3}, streams = {1, 0, 1};
    Graph g;
    Node* cache = g.add(Op::State, {}, {DType::F16, cs.dims()}, {{"name", std::string("k")}});
    std::vector<Node*> ops = {cache, input(g, "x", DType::F32, {kDynamic, cs.F}),
                              input(g, "pos", DType::I32, {kDynamic}), input(g, "streams", DType::I32, {kDynamic})};
    auto ref = reference(g, Op::KvWrite, ops, {},
                         {{"x", f32_tensor({T, cs.F}, x)}, {"pos", i32_tensor(pos)}, {"streams", i32_tensor(streams)}});
    for (const Schedule& sc : kSchedules) {
      std::vector<_Float16> c((size_t)cs.floats(), (_Float16)0.0f);
      run_split(sc, [&](int32_t tid, int32_t nth) {
        kiln_kv_write_f16(c.data(), x.data(), pos.data(), streams.data(), T, cs.F, cs.C * cs.F, tid, nth);
      });
      std::vector<float> wide(c.begin(), c.end());
      EXPECT_TRUE(same_bits(wide, ref)) << describe(sc);
    }
  }
  struct Shape { int64_t S, C, H, KVH, hd, T; };
  for (const Shape& sh : {Shape{2, 70, 9, 3, 64, 4}, Shape{4, 20, 3, 1, 12, 9}, Shape{2, 33, 2, 2, 40, 1}}) {
    const int64_t F = sh.KVH * sh.hd;
    const CacheShape cs{sh.S, sh.C, F};
    SCOPED_TRACE(fmt::format("S={} C={} H={} KVH={} hd={} T={}", sh.S, sh.C, sh.H, sh.KVH, sh.hd, sh.T));
    auto q = random_floats(rng, sh.T * sh.H * sh.hd);
    auto kf = random_floats(rng, cs.floats(), 2.0f), vf = random_floats(rng, cs.floats());
    std::vector<_Float16> kh(kf.begin(), kf.end()), vh(vf.begin(), vf.end());
    std::vector<float> kw(kh.begin(), kh.end()), vw(vh.begin(), vh.end());  // the halves, widened
    auto pos = random_ints(rng, sh.T, 0, (int32_t)(sh.C * 3 / 4));
    auto streams = random_ints(rng, sh.T, 0, (int32_t)sh.S - 1);
    // A chain tree of N = T nodes over one stream for the tree kernels.
    std::vector<int32_t> depth, tpos, tstreams((size_t)sh.T, 0);
    std::vector<uint64_t> anc;
    for (int64_t j = 0; j < sh.T; ++j) {
      depth.push_back((int32_t)j);
      anc.push_back(j ? anc.back() | (1ull << j) : 1ull);
      tpos.push_back((int32_t)(sh.C / 2 + j));
    }
    for (const Schedule& sc : kSchedules) {
      const size_t out = (size_t)(sh.T * sh.H * sh.hd);
      std::vector<float> y32(out, NAN), y16(out, NAN), t32(out, NAN), t16(out, NAN);
      std::vector<float> scratch((size_t)(sc.nth * kiln_attention_heads_per_pass(sh.H, sh.KVH) * sh.C), NAN);
      run_split(sc, [&](int32_t tid, int32_t nth) {
        kiln_attention(q.data(), kw.data(), vw.data(), pos.data(), streams.data(), y32.data(), scratch.data(),
                       sh.T, sh.C, sh.H, sh.KVH, sh.hd, sh.C * F, tid, nth);
      });
      run_split(sc, [&](int32_t tid, int32_t nth) {
        kiln_attention_f16(q.data(), kh.data(), vh.data(), pos.data(), streams.data(), y16.data(), scratch.data(),
                           sh.T, sh.C, sh.H, sh.KVH, sh.hd, sh.C * F, tid, nth);
      });
      EXPECT_TRUE(same_bits(y16, y32)) << describe(sc);
      run_split(sc, [&](int32_t tid, int32_t nth) {
        kiln_tree_attention(q.data(), kw.data(), vw.data(), tpos.data(), tstreams.data(), t32.data(), scratch.data(),
                            sh.T, sh.C, sh.H, sh.KVH, sh.hd, sh.C * F, sh.T, depth.data(), anc.data(), tid, nth);
      });
      run_split(sc, [&](int32_t tid, int32_t nth) {
        kiln_tree_attention_f16(q.data(), kh.data(), vh.data(), tpos.data(), tstreams.data(), t16.data(),
                                scratch.data(), sh.T, sh.C, sh.H, sh.KVH, sh.hd, sh.C * F, sh.T, depth.data(),
                                anc.data(), tid, nth);
      });
      EXPECT_TRUE(same_bits(t16, t32)) << describe(sc);
    }
  }
}

}  // namespace
}  // namespace kiln
