// tests/unit/codegen_test.cpp — the code kiln emits, against the reference interpreter.
//
// kernels_test.cpp checks the kernel templates built natively by gcc; this file checks
// what codegen/lower.cpp makes of them: each graph goes through freeze-base and
// plan-memory, codegen::compile_graph for the host profile, is loaded with JitObject and
// its step is called directly (tests/unit/step_runner.h) with 1, 2 and 3 threads, also
// with threads made to lag each other at every barrier. Weights are GGUF bytes of every
// storage type; float activations are embed rows of random f32 tables, so the row count
// is dynamic (constant-node activations: see ConstantOperands). As in ggml's
// test-backend-ops, each op gets one small test over a few shapes and row counts (T = 1,
// even, odd, n_rows < max_rows and = max_rows), measured by the normalized mean squared
// error
//
//   NMSE = sum (compiled - interpreter)^2 / sum interpreter^2
//
// against a bound set per op where its reason is written down. Results must also be bit
// for bit the same for every thread count, and KV caches match the interpreter's state.
// Every distinct graph is compiled once (LLVM O3 on a tiny graph takes ~0.1-0.3 s).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "frontend/gguf_writer.h"
#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/verifier.h"
#include "support/file.h"
#include "tests/unit/step_runner.h"
#include "tests/unit/tiny_model.h"

#include "tests/unit/numeric.h"

namespace kiln {
namespace {

using testing::nmse;
using testing::random_floats;
using testing::random_ints;
using testing::same_bits;


using testing::Schedule;
using testing::StepRows;
using testing::StepRunner;
using Attrs = std::map<std::string, Attr, std::less<>>;

constexpr int64_t kMaxRows = 9;
constexpr int64_t kMaxThreads = 3;
const int64_t kRowCounts[] = {1, 2, 5, kMaxRows};
// One thread (no-op barrier), two and three on a real barrier, and three where the high
// tids (then the low tids) lag 200 us behind at the start and after every barrier: a
// barrier lower.cpp fails to emit lets the leading thread read NaN-poisoned arena bytes.
const Schedule kSchedules[] = {{1}, {2}, {3}, {3, 1}, {3, -1}};

// Float arithmetic, the same dequantized weights on both sides: the kernels sum in float
// with a fixed lane order, the interpreter in double (see kernels_test.cpp for each op's
// error analysis; observed values are far smaller, ~1e-14). 1e-10 still catches a single
// wrong element (> 1e-6) or a wrong row.
constexpr double kFloatBound = 1e-10;
// Copies (embed, gather_rows, last_row, kv_write) and one float add or multiply per
// element (add, mul) must give the interpreter's values exactly.
constexpr double kExact = 0;

const DType kWeightTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q8_0};

std::string describe(const Schedule& s) {
  return fmt::format("nth={}{}", s.nth, s.lag > 0 ? " high tids lag" : s.lag < 0 ? " low tids lag" : "");
}

// The largest NMSE a test saw, reported as a test property (in --gtest_output=xml).
struct Worst {
  double nmse = 0;
  void operator()(double e) { nmse = std::max(nmse, e); }
  ~Worst() { ::testing::Test::RecordProperty("worst_nmse", fmt::format("{:.3g}", nmse)); }
};

// ---- graphs with GGUF weights -----------------------------------------------------------

// A graph under construction and the GGUF file its weights come from.
class Builder {
 public:
  explicit Builder(std::string name, uint32_t seed = 1) : g(std::move(name)), rng(seed) {}
  Builder(const Builder&) = delete;

  Graph g;
  std::mt19937 rng;

  // A weight stored as `dt` in the GGUF file (values rounded to that type there).
  Node* weight(const std::string& name, DType dt, std::vector<int64_t> shape, const std::vector<float>& v) {
    w_.add_tensor_f32(name, dt, shape, v);
    return g.add(Op::Weight, {}, {dt, std::move(shape)}, {{"name", name}}, name);
  }
  Node* random_weight(const std::string& name, DType dt, std::vector<int64_t> shape, float scale = 1.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return weight(name, dt, std::move(shape), random_floats(rng, n, scale));
  }
  // One of the step inputs, i32[?].
  Node* input(const std::string& name) {
    if (Node* n = g.find_input(name)) return n;
    return g.add(Op::Input, {}, {DType::I32, {kDynamic}}, {{"name", name}});
  }
  Node* state(const std::string& name, int64_t S, int64_t C, int64_t F) {
    return g.add(Op::State, {}, {DType::F32, {S, C, F}}, {{"name", name}}, name);
  }
  Node* constant(std::vector<int64_t> shape, const std::vector<float>& v) {
    DenseData d;
    d.f32 = v;
    return g.add(Op::Constant, {}, {DType::F32, std::move(shape)}, {{"value", d}});
  }
  Node* op(Op op, std::vector<Node*> operands, Attrs attrs = {}) {
    auto n = g.build(op, std::move(operands), std::move(attrs));
    EXPECT_TRUE(n.ok()) << n.error().message;
    return n.ok() ? *n : nullptr;
  }
  // f32[?, F] activations: rows of a random f32 table [V, F] picked by the step's tokens.
  Node* activations(const std::string& name, int64_t V, int64_t F, float scale = 1.0f) {
    return op(Op::Embed, {random_weight(name, DType::F32, {V, F}, scale), input("tokens")});
  }
  void output(Node* n) { op(Op::Output, {n}, {{"name", std::string("logits")}}); }

  // Attaches the GGUF weights, verifies, and plans the graph for the backend.
  Status finish(std::string_view passes = "freeze-base,plan-memory") {
    bytes_ = w_.bytes();
    KILN_ASSIGN(auto f, GgufFile::parse(MappedFile::borrow(bytes_.data(), bytes_.size(), g.name() + ".gguf")));
    g.set_weights(std::make_shared<GgufWeights>(std::shared_ptr<const GgufFile>(std::move(f))));
    KILN_TRY(verify(g));
    return testing::plan_for_codegen(g, kMaxRows, kMaxThreads, passes);
  }

 private:
  GgufWriter w_;
  std::string bytes_;  // the GGUF file; GgufWeights reads it in place
};

std::unique_ptr<StepRunner> compile(const Graph& g, const CodegenOptions& opts = {}) {
  auto r = StepRunner::create(g, opts);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? std::move(r).value() : nullptr;
}

// ---- steps ------------------------------------------------------------------------------

// One independent step per row count: random tokens (the last of the vocabulary
// included), positions in [0, max_pos] out of order, stream 0, and a random list of
// logit rows (repeats allowed, possibly empty).
std::vector<StepRows> row_sets(std::mt19937& rng, int32_t vocab, int32_t max_pos = 0) {
  std::vector<StepRows> out;
  for (int64_t T : kRowCounts) {
    StepRows s;
    s.tokens = random_ints(rng, T, 0, vocab - 1);
    s.tokens[0] = vocab - 1;
    s.positions = random_ints(rng, T, 0, max_pos);
    s.streams.assign((size_t)T, 0);
    s.logit_rows = random_ints(rng, std::uniform_int_distribution<int64_t>(0, kMaxRows)(rng), 0, (int32_t)T - 1);
    out.push_back(std::move(s));
  }
  return out;
}

// A conversation over several streams: each step lists the stream of each row; rows take
// their stream's next position, so KV written by earlier steps is read by later ones.
// Logit rows: a random non-empty subset, the last row always included.
std::vector<StepRows> conversation(std::mt19937& rng, int32_t vocab, int32_t streams) {
  const int32_t last = streams - 1;
  const std::vector<std::vector<int32_t>> plan = {
      {0, 0, 0, 0, 0},                       // prefill stream 0
      {last, last, last, last, last, last, last, last, last},  // prefill the last, max_rows
      {0, last},                             // decode two streams
      {last, 0, streams > 2 ? 1 : 0, 0, last, 0, last},  // interleaved
      {0},                                   // decode one row
      {streams > 2 ? 1 : last, last, 0}};
  std::vector<int32_t> next((size_t)streams, 0);
  std::vector<StepRows> out;
  for (const auto& rows : plan) {
    StepRows s;
    s.streams = rows;
    for (int32_t st : rows) s.positions.push_back(next[(size_t)st]++);
    s.tokens = random_ints(rng, (int64_t)rows.size(), 0, vocab - 1);
    for (int32_t r = 0; r + 1 < (int32_t)rows.size(); ++r)
      if (rng() % 2) s.logit_rows.push_back(r);
    s.logit_rows.push_back((int32_t)rows.size() - 1);
    out.push_back(std::move(s));
  }
  return out;
}

// Runs `steps` in order on the interpreter (fresh state) and, for every schedule, on the
// compiled code (fresh KV). Each step's logits must be within `bound` NMSE of the
// interpreter's (kExact: equal values) and bit-identical across schedules; after the last
// step every KV cache must be within `kv_bound` of the interpreter's state (kExact where
// the cached rows are copies of exact values). Returns the worst NMSE of the logits.
double check_steps(const Graph& g, StepRunner& r, const std::vector<StepRows>& steps, double bound,
                   double kv_bound = kExact) {
  Interpreter in(g);
  std::vector<std::vector<float>> ref;
  for (const StepRows& s : steps) {
    auto out = in.run(s.interpreter_inputs());
    EXPECT_TRUE(out.ok()) << out.error().message;
    if (!out.ok()) return INFINITY;
    ref.push_back(out->at("logits").f32);
  }
  double worst = 0;
  std::vector<std::vector<float>> first;
  for (const Schedule& sched : kSchedules) {
    SCOPED_TRACE(describe(sched));
    r.reset_kv();
    for (size_t i = 0; i < steps.size(); ++i) {
      SCOPED_TRACE(fmt::format("step {} ({} rows, {} logit rows)", i, steps[i].n_rows(), steps[i].logit_rows.size()));
      auto y = r.step(steps[i], sched, ref[i].size());
      EXPECT_TRUE(y.ok()) << y.error().message;
      if (!y.ok()) return INFINITY;
      double e = nmse(*y, ref[i]);
      worst = std::max(worst, std::isnan(e) ? INFINITY : e);
      if (bound == kExact) { EXPECT_TRUE(*y == ref[i]) << "NMSE " << e; }
      else EXPECT_LT(e, bound);
      if (first.size() <= i) first.push_back(*y);
      else EXPECT_TRUE(same_bits(*y, first[i])) << "differs from " << describe(kSchedules[0]);
    }
    for (const Node* st : g.nodes_of(Op::State)) {
      SCOPED_TRACE(fmt::format("state {}", *st->str_attr("name")));
      const auto& ref_state = in.state().at(std::string(*st->str_attr("name")))->f32;
      std::vector<float> got = r.state(st);
      if (kv_bound == kExact) { EXPECT_TRUE(same_bits(got, ref_state)); }
      else EXPECT_LT(nmse(got, ref_state), kv_bound);
    }
  }
  return worst;
}

// Plans the graph, compiles it and checks it on `steps`.
double check_graph(Builder& b, const std::vector<StepRows>& steps, double bound) {
  Status s = b.finish();
  EXPECT_TRUE(s.ok()) << s.error().message;
  if (!s.ok()) return INFINITY;
  auto r = compile(b.g);
  if (!r) return INFINITY;
  return check_steps(b.g, *r, steps, bound);
}

// ---- one op each ------------------------------------------------------------------------

// Table rows decoded from every storage type; the decoded values equal dequantize_row's.
TEST(Codegen, EmbedMatchesInterpreter) {
  struct Case { DType dt; int64_t V, D; };
  const Case cases[] = {{DType::F32, 50, 45}, {DType::F16, 33, 7},  {DType::BF16, 40, 64},
                        {DType::Q4_0, 50, 96}, {DType::Q4_1, 17, 32}, {DType::Q8_0, 50, 160}};
  Worst worst;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("{} V={} D={}", dtype_name(c.dt), c.V, c.D));
    Builder b("embed");
    b.output(b.op(Op::Embed, {b.random_weight("table", c.dt, {c.V, c.D}), b.input("tokens")}));
    worst(check_graph(b, row_sets(b.rng, (int32_t)c.V), kExact));
  }
}

TEST(Codegen, MatmulMatchesInterpreter) {
  struct Shape { int64_t K, N; };
  const Shape shapes[] = {{64, 17}, {160, 40}, {45, 9}};  // K = 45: float types only
  Worst worst;
  for (DType dt : kWeightTypes) {
    double worst_dt = 0;
    for (const Shape& sh : shapes) {
      if (is_quantized(dt) && sh.K % 32) continue;
      if (!is_quantized(dt) && dt != DType::F32 && sh.K == 160) continue;  // keep the compile count down
      SCOPED_TRACE(fmt::format("{} K={} N={}", dtype_name(dt), sh.K, sh.N));
      Builder b("matmul");
      Node* x = b.activations("x", 30, sh.K);
      b.output(b.op(Op::MatMul, {x, b.random_weight("w", dt, {sh.N, sh.K}, 1.0f / std::sqrt((float)sh.K))}));
      worst_dt = std::max(worst_dt, check_graph(b, row_sets(b.rng, 30), kFloatBound));
    }
    worst(worst_dt);
    RecordProperty(fmt::format("worst_nmse_{}", dtype_name(dt)), fmt::format("{:.3g}", worst_dt));
  }
}

// q4_0/q4_1/q8_0 weights with the graph's int8_activations on: lower.cpp picks the
// int8-activation kernel the host profile allows (qmatmul.c). Bound 1e-4: the int8
// rounding of x alone gives ~2e-5..4e-5 (kernels_test's Int8ActivationMatmul analysis);
// results are still bit-identical for every thread count.
TEST(Codegen, Int8ActivationMatmulMatchesInterpreter) {
  struct Shape { int64_t K, N; };
  const Shape shapes[] = {{64, 17}, {160, 40}};
  Worst worst;
  for (DType dt : {DType::Q4_0, DType::Q4_1, DType::Q8_0}) {
    for (const Shape& sh : shapes) {
      SCOPED_TRACE(fmt::format("{} K={} N={}", dtype_name(dt), sh.K, sh.N));
      Builder b("matmul");
      b.g.set_attr("int8_activations", int64_t{1});
      Node* x = b.activations("x", 30, sh.K);
      b.output(b.op(Op::MatMul, {x, b.random_weight("w", dt, {sh.N, sh.K}, 1.0f / std::sqrt((float)sh.K))}));
      worst(check_graph(b, row_sets(b.rng, 30), 1e-4));
    }
  }
}

// The norm weight is stored f32 and f16 in the GGUF file; freeze-base converts it to f32.
TEST(Codegen, RmsNormMatchesInterpreter) {
  struct Case { int64_t D; DType weight; double eps; };
  const Case cases[] = {{64, DType::F32, 1e-5}, {45, DType::F16, 1e-6}};
  Worst worst;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("D={} weight {}", c.D, dtype_name(c.weight)));
    Builder b("rms_norm");
    Node* x = b.activations("x", 20, c.D, 3.0f);
    b.output(b.op(Op::RmsNorm, {x, b.random_weight("w", c.weight, {c.D})}, {{"eps", c.eps}}));
    worst(check_graph(b, row_sets(b.rng, 20), kFloatBound));
  }
}

// b is a full [T, F] operand, a row [F] or a row [1, F] (weights freeze-base makes f32).
TEST(Codegen, AddAndMulMatchInterpreter) {
  enum Rhs { kFull, kRow, kRow2d };
  struct Case { Op op; int64_t F; Rhs rhs; };
  const Case cases[] = {{Op::Add, 45, kFull}, {Op::Add, 64, kRow}, {Op::Mul, 33, kFull}, {Op::Mul, 45, kRow2d}};
  Worst worst;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("{} F={} rhs {}", op_name(c.op), c.F, (int)c.rhs));
    Builder b("elementwise");
    Node* a = b.activations("a", 25, c.F);
    Node* rhs = c.rhs == kFull ? b.activations("b", 25, c.F)
              : c.rhs == kRow  ? b.random_weight("b", DType::F32, {c.F})
                               : b.random_weight("b", DType::F32, {1, c.F});
    b.output(b.op(c.op, {a, rhs}));
    worst(check_graph(b, row_sets(b.rng, 25), kExact));
  }
}

TEST(Codegen, SiluMatchesInterpreter) {
  Worst worst;
  for (int64_t F : {45, 96}) {
    SCOPED_TRACE(fmt::format("F={}", F));
    Builder b("silu");
    b.output(b.op(Op::Silu, {b.activations("x", 20, F, 4.0f)}));
    worst(check_graph(b, row_sets(b.rng, 20), kFloatBound));
  }
}

// Positions up to 60000, out of order; n_rot < head_dim leaves dimensions untouched.
TEST(Codegen, RopeMatchesInterpreter) {
  struct Case { int64_t heads, hd, nrot; double theta; };
  const Case cases[] = {{3, 64, 64, 10000.0}, {2, 16, 8, 500000.0}};
  Worst worst;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("heads={} hd={} nrot={} theta={}", c.heads, c.hd, c.nrot, c.theta));
    Builder b("rope");
    Node* x = b.activations("x", 20, c.heads * c.hd);
    b.output(b.op(Op::Rope, {x, b.input("positions")},
                  {{"head_dim", c.hd}, {"n_rot", c.nrot}, {"theta", c.theta}}));
    worst(check_graph(b, row_sets(b.rng, 20, 60000), kFloatBound));
  }
}

TEST(Codegen, LastRowMatchesInterpreter) {
  Builder b("last_row");
  b.output(b.op(Op::LastRow, {b.activations("x", 20, 45)}));
  EXPECT_EQ(check_graph(b, row_sets(b.rng, 20), kExact), 0.0);
}

// Rows named by logit_rows (n_logit_rows from 0 to max_rows, repeats allowed).
TEST(Codegen, GatherRowsMatchesInterpreter) {
  for (int64_t F : {7, 64}) {
    SCOPED_TRACE(fmt::format("F={}", F));
    Builder b("gather_rows");
    b.output(b.op(Op::GatherRows, {b.activations("x", 20, F), b.input("logit_rows")}));
    auto steps = row_sets(b.rng, 20);
    steps[1].logit_rows.clear();  // no logits wanted: nothing may be written
    steps[3].logit_rows = random_ints(b.rng, kMaxRows, 0, kMaxRows - 1);
    EXPECT_EQ(check_graph(b, steps, kExact), 0.0);
  }
}

// Rows written into a three-stream cache over several steps; the output is the written
// rows themselves, and the cache must equal the interpreter's state after the last step.
TEST(Codegen, KvWriteMatchesInterpreter) {
  const int64_t S = 3, C = 24, F = 40;
  Builder b("kv_write");
  Node* x = b.activations("x", 30, F);
  b.op(Op::KvWrite, {b.state("kv.k", S, C, F), x, b.input("positions"), b.input("streams")});
  b.output(x);
  EXPECT_EQ(check_graph(b, conversation(b.rng, 30, S), kExact), 0.0);
}

// ---- lora ------------------------------------------------------------------------------

// One LoRA target of lora-as-input's shape: inputs lora.<w>.a f32[K,R,in],
// lora.<w>.b f32[K,R,out] and lora.<w>.rank i32[K] (in the adapter region at
// plan-memory's adapter_offset), the shared lora.scale f32[K] and adapter_slots i32[?]
// (args->adapter_slots).
struct LoraShape { int64_t K, R, in, out; };

Node* lora_node(Builder& b, Node* x, const std::string& w, const LoraShape& c) {
  auto f32_input = [&](const std::string& name, std::vector<int64_t> shape) {
    if (Node* n = b.g.find_input(name)) return n;
    return b.g.add(Op::Input, {}, {DType::F32, std::move(shape)}, {{"name", name}});
  };
  Node* a = f32_input("lora." + w + ".a", {c.K, c.R, c.in});
  Node* bb = f32_input("lora." + w + ".b", {c.K, c.R, c.out});
  Node* scale = f32_input("lora.scale", {c.K});
  Node* rank = b.g.add(Op::Input, {}, {DType::I32, {c.K}}, {{"name", "lora." + w + ".rank"}});
  return b.op(Op::Lora, {x, a, bb, scale, b.input("adapter_slots"), rank});
}

// Adapter factors for slots 0..K-1: slot k has rank ranks[k] <= R (0: the adapter does
// not touch this target). The rows of a and b at or past a slot's rank hold large values
// that the rank says to ignore: the kernel and the interpreter must both leave them out.
void fill_adapter(std::mt19937& rng, const std::string& w, const LoraShape& c,
                  const std::vector<int64_t>& ranks, std::map<std::string, Tensor>& out) {
  Tensor a = Tensor::f32_of({c.K, c.R, c.in}, random_floats(rng, c.K * c.R * c.in, 100.0f));
  Tensor bt = Tensor::f32_of({c.K, c.R, c.out}, random_floats(rng, c.K * c.R * c.out, 100.0f));
  std::vector<int32_t> rank;
  for (int64_t k = 0; k < c.K; ++k) {
    rank.push_back((int32_t)ranks[(size_t)k]);
    for (int64_t r = 0; r < ranks[(size_t)k]; ++r) {
      auto av = random_floats(rng, c.in, 1.0f / std::sqrt((float)c.in));
      std::copy(av.begin(), av.end(), a.f32.begin() + (k * c.R + r) * c.in);
      auto bv = random_floats(rng, c.out);
      std::copy(bv.begin(), bv.end(), bt.f32.begin() + (k * c.R + r) * c.out);
    }
  }
  out.insert_or_assign("lora." + w + ".a", std::move(a));
  out.insert_or_assign("lora." + w + ".b", std::move(bt));
  out.insert_or_assign("lora." + w + ".rank", Tensor::i32_of({c.K}, rank));
}

// Every slot a full-rank random adapter; rows pick random slots.
TEST(Codegen, LoraMatchesInterpreter) {
  const LoraShape cases[] = {{4, 16, 64, 40}, {3, 3, 45, 17}, {2, 64, 72, 33}};
  Worst worst;
  for (const LoraShape& c : cases) {
    SCOPED_TRACE(fmt::format("K={} R={} in={} out={}", c.K, c.R, c.in, c.out));
    Builder b("lora");
    Node* x = b.activations("x", 30, c.in);
    b.output(lora_node(b, x, "w", c));
    std::map<std::string, Tensor> adapters;
    fill_adapter(b.rng, "w", c, std::vector<int64_t>((size_t)c.K, c.R), adapters);
    std::vector<float> scale = random_floats(b.rng, c.K);
    adapters.insert_or_assign("lora.scale", Tensor::f32_of({c.K}, scale));
    auto steps = row_sets(b.rng, 30);
    for (StepRows& s : steps) {
      s.adapter_slots = random_ints(b.rng, s.n_rows(), 0, (int32_t)c.K - 1);
      s.adapters = adapters;
    }
    worst(check_graph(b, steps, kFloatBound));
  }
}

// The pattern lora-as-input makes, add(matmul(x, W), lora(x, ...)), lowered as one fused
// kiln_lora_add that reads the matmul's columns without a barrier: q and v projections
// side by side (as in attention, no barrier between them), f32 and q4_1 weights (float
// activations, as the interpreter computes), rows on the zero adapter and on adapters.
TEST(Codegen, LoraFusedWithProjectionMatchesInterpreter) {
  for (DType dt : {DType::F32, DType::Q4_1}) {
    SCOPED_TRACE(dtype_name(dt));
    const LoraShape q = {3, 8, 64, 72}, v = {3, 8, 64, 40};
    Builder b("lora_fused");
    Node* x = b.activations("x", 30, q.in);
    auto proj = [&](const std::string& w, const LoraShape& c) {
      Node* m = b.op(Op::MatMul, {x, b.random_weight(w, dt, {c.out, c.in}, 1.0f / std::sqrt((float)c.in))});
      return b.op(Op::Add, {m, lora_node(b, x, w, c)});
    };
    Node* yq = proj("blk.0.attn_q.weight", q);
    Node* yv = proj("blk.0.attn_v.weight", v);
    Node* wsel = b.random_weight("sel", DType::F32, {q.out, v.out}, 0.2f);
    b.output(b.op(Op::Add, {yq, b.op(Op::MatMul, {yv, wsel})}));
    std::map<std::string, Tensor> adapters;
    fill_adapter(b.rng, "blk.0.attn_q.weight", q, {8, 3, 8}, adapters);
    fill_adapter(b.rng, "blk.0.attn_v.weight", v, {8, 8, 1}, adapters);
    adapters.insert_or_assign("lora.scale", Tensor::f32_of({q.K}, {5.0f, 2.0f, -0.75f}));
    auto steps = row_sets(b.rng, 30);
    for (StepRows& s : steps) {
      for (int64_t t = 0; t < s.n_rows(); ++t) s.adapter_slots.push_back((int32_t)((t * 2 + 1) % q.K));
      s.adapters = adapters;
    }
    b.g.set_attr("int8_activations", int64_t{0});  // the interpreter's float matmul: exact comparison
    check_graph(b, steps, kFloatBound);
  }
}

// matmul_swiglu's LoRA form (fuse-matmul-swiglu on a LoRA graph), lowered to
// kiln_matmul_swiglu_lora_*: gate and up side paths of different ranks per slot (0: that
// side untouched), rows on the zero adapter and on adapters, int8 activations (bound 1e-4,
// as the int8 matmuls).
TEST(Codegen, SwigluWithLoraMatchesInterpreter) {
  for (DType dt : {DType::Q4_1, DType::Q8_0}) {
    SCOPED_TRACE(dtype_name(dt));
    const LoraShape c = {3, 8, 64, 48};
    Builder b("swiglu_lora");
    b.g.set_attr("int8_activations", int64_t{1});
    Node* x = b.activations("x", 30, c.in);
    const float ws = 1.0f / std::sqrt((float)c.in);
    Node* wg = b.random_weight("blk.0.ffn_gate.weight", dt, {c.out, c.in}, ws);
    Node* wu = b.random_weight("blk.0.ffn_up.weight", dt, {c.out, c.in}, ws);
    Node* lg = lora_node(b, x, "blk.0.ffn_gate.weight", c);
    Node* lu = lora_node(b, x, "blk.0.ffn_up.weight", c);
    b.output(b.op(Op::MatMulSwiGlu, {x, wg, wu, lg->operand(1), lg->operand(2), lu->operand(1), lu->operand(2),
                                     lg->operand(3), lg->operand(4), lg->operand(5), lu->operand(5)}));
    b.g.erase_if([&](const Node* n) { return n == lg || n == lu; });
    std::map<std::string, Tensor> adapters;
    fill_adapter(b.rng, "blk.0.ffn_gate.weight", c, {8, 3, 8}, adapters);
    fill_adapter(b.rng, "blk.0.ffn_up.weight", c, {8, 0, 5}, adapters);
    adapters.insert_or_assign("lora.scale", Tensor::f32_of({c.K}, {5.0f, 0.5f, -0.75f}));
    auto steps = row_sets(b.rng, 30);
    for (StepRows& s : steps) {
      for (int64_t t = 0; t < s.n_rows(); ++t) s.adapter_slots.push_back((int32_t)((t * 2 + 1) % c.K));
      s.adapters = adapters;
    }
    check_graph(b, steps, 1e-4);
  }
}

// Two targets sharing scale and slots (two adapter-region offsets), rows of one step on
// different slots: the zero adapter (slot 0, the base model), and adapters of ranks below
// the compiled R, zero-padded.
TEST(Codegen, LoraMultiSlotMatchesInterpreter) {
  const LoraShape q = {4, 8, 48, 24}, v = {4, 8, 48, 40};
  Builder b("lora_multi");
  Node* x = b.activations("x", 30, q.in);
  Node* lq = lora_node(b, x, "blk.0.attn_q.weight", q);
  Node* lv = lora_node(b, x, "blk.0.attn_v.weight", v);
  // Both side paths reach the output: [T,24] of q, then the first 24 columns of v's.
  Node* wsel = b.random_weight("sel", DType::F32, {q.out, v.out}, 0.2f);
  b.output(b.op(Op::Add, {lq, b.op(Op::MatMul, {lv, wsel})}));
  std::map<std::string, Tensor> adapters;
  fill_adapter(b.rng, "blk.0.attn_q.weight", q, {0, 2, 8, 5}, adapters);
  fill_adapter(b.rng, "blk.0.attn_v.weight", v, {0, 3, 8, 1}, adapters);
  adapters.insert_or_assign("lora.scale", Tensor::f32_of({q.K}, {0.0f, 2.0f, 0.5f, -1.25f}));
  auto steps = row_sets(b.rng, 30);
  for (StepRows& s : steps) {
    for (int64_t t = 0; t < s.n_rows(); ++t) s.adapter_slots.push_back((int32_t)((t * 3 + 1) % q.K));
    s.adapters = adapters;
  }
  Status st = b.finish();
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto qa = b.g.find_input("lora.blk.0.attn_q.weight.a"), va = b.g.find_input("lora.blk.0.attn_v.weight.a");
  ASSERT_TRUE(qa && va);
  EXPECT_EQ(*qa->int_attr("adapter_offset") % 64, 0);
  EXPECT_NE(*qa->int_attr("adapter_offset"), *va->int_attr("adapter_offset"));
  auto r = compile(b.g);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->model().adapter_bytes, (uint64_t)*b.g.int_attr("adapter_bytes"));
  Worst worst;
  worst(check_steps(b.g, *r, steps, kFloatBound));
}

// kv_write of k and v, then causal GQA attention over what this and earlier steps wrote.
TEST(Codegen, AttentionOverSeveralStepsAndStreams) {
  struct Case { int64_t S, C, H, KVH, hd; };
  const Case cases[] = {{3, 24, 4, 2, 16}, {2, 20, 9, 3, 64}, {1, 32, 1, 1, 8}};
  Worst worst;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("S={} C={} H={} KVH={} hd={}", c.S, c.C, c.H, c.KVH, c.hd));
    const int64_t V = 30, F = c.KVH * c.hd;
    Builder b("attention");
    Node* pos = b.input("positions");
    Node* streams = b.input("streams");
    Node* q = b.activations("q", V, c.H * c.hd);
    Node* k = b.op(Op::KvWrite, {b.state("kv.k", c.S, c.C, F), b.activations("k", V, F, 0.5f), pos, streams});
    Node* v = b.op(Op::KvWrite, {b.state("kv.v", c.S, c.C, F), b.activations("v", V, F), pos, streams});
    b.output(b.op(Op::Attention, {q, k, v, pos, streams},
                  {{"n_head", c.H}, {"n_kv_head", c.KVH}, {"head_dim", c.hd}}));
    worst(check_graph(b, conversation(b.rng, (int32_t)V, (int32_t)c.S), kFloatBound));
  }
}

// ---- chains -----------------------------------------------------------------------------

// Nodes that compute a value into the arena or the logits.
int computing_nodes(const Graph& g) {
  int n = 0;
  for (const Node* v : g.nodes()) n += v->has_attr("arena_offset") || v->has_attr("place");
  return n;
}

// A LLaMA layer with a different weight type per matrix, two streams, and logits for the
// logit rows only:
//
//   tokens─embed(q8_0)─rms_norm─┬matmul q(q4_0)─rope──────────────────┐
//                               ├matmul k(q4_1)─rope─kv_write─attention─matmul o(f16)─add─┐
//                               └matmul v(bf16)──────kv_write─┘                     (x)─┘
//   ─rms_norm─┬matmul gate(q8_0)─silu─mul─matmul down(f32)─add─gather_rows─rms_norm─matmul(q4_1)
//             └matmul up(q4_0)──────┘
//
// The matrices and ropes interleave (unlike frontend/llama.cpp's order), so plan-memory
// hands a slot to the next node as soon as its last reader has run: barriers must guard
// against overwriting what another thread may still read, not only against early reads.
constexpr int64_t kChainVocab = 40, kChainStreams = 2;
void build_chain(Builder& b) {
  const int64_t D = 64, H = 4, KVH = 2, hd = 16, FF = 96, C = 24, V = kChainVocab;
  const float ws = 1.0f / std::sqrt((float)D);
  Node* pos = b.input("positions");
  Node* streams = b.input("streams");
  auto norm = [&](Node* x, const char* name) {
    return b.op(Op::RmsNorm, {x, b.weight(name, DType::F32, {D}, random_floats(b.rng, D, 0.1f))}, {{"eps", 1e-5}});
  };
  auto rope = [&](Node* x) {
    return b.op(Op::Rope, {x, pos}, {{"head_dim", hd}, {"n_rot", hd}, {"theta", 10000.0}});
  };
  Node* x = b.op(Op::Embed, {b.random_weight("token_embd", DType::Q8_0, {V, D}), b.input("tokens")});
  Node* n = norm(x, "attn_norm");
  Node* q = rope(b.op(Op::MatMul, {n, b.random_weight("attn_q", DType::Q4_0, {H * hd, D}, ws)}));
  Node* k = rope(b.op(Op::MatMul, {n, b.random_weight("attn_k", DType::Q4_1, {KVH * hd, D}, ws)}));
  Node* v = b.op(Op::MatMul, {n, b.random_weight("attn_v", DType::BF16, {KVH * hd, D}, ws)});
  Node* kw = b.op(Op::KvWrite, {b.state("kv.0.k", kChainStreams, C, KVH * hd), k, pos, streams});
  Node* vw = b.op(Op::KvWrite, {b.state("kv.0.v", kChainStreams, C, KVH * hd), v, pos, streams});
  Node* att = b.op(Op::Attention, {q, kw, vw, pos, streams}, {{"n_head", H}, {"n_kv_head", KVH}, {"head_dim", hd}});
  x = b.op(Op::Add, {b.op(Op::MatMul, {att, b.random_weight("attn_output", DType::F16, {D, H * hd}, ws)}), x});
  n = norm(x, "ffn_norm");
  Node* gate = b.op(Op::Silu, {b.op(Op::MatMul, {n, b.random_weight("ffn_gate", DType::Q8_0, {FF, D}, ws)})});
  Node* up = b.op(Op::MatMul, {n, b.random_weight("ffn_up", DType::Q4_0, {FF, D}, ws)});
  Node* down = b.op(Op::MatMul, {b.op(Op::Mul, {gate, up}),
                                 b.random_weight("ffn_down", DType::F32, {D, FF}, 1.0f / std::sqrt((float)FF))});
  x = b.op(Op::Add, {down, x});
  x = norm(b.op(Op::GatherRows, {x, b.input("logit_rows")}), "output_norm");
  b.output(b.op(Op::MatMul, {x, b.random_weight("output", DType::Q4_1, {V, D}, ws)}));
}

// Bound: kFloatBound. Every op's float error (~1e-14 NMSE each) passes through later ops
// unchanged in size: rms_norm rescales, attention and matmul average; nothing amplifies.
TEST(Codegen, ChainOfOpsOverSeveralSteps) {
  Builder b("chain", 7);
  build_chain(b);
  ASSERT_TRUE(b.finish().ok());
  CodegenOptions opts;
  opts.symbol = "chain_model";
  opts.model_hash = 0x0123456789abcdefull;
  auto r = compile(b.g, opts);
  ASSERT_TRUE(r);
  Worst worst;
  auto steps = conversation(b.rng, kChainVocab, kChainStreams);
  worst(check_steps(b.g, *r, steps, kFloatBound, kFloatBound));

  // The descriptor describes the planned graph.
  const kiln_compiled_model& m = r->model();
  EXPECT_EQ(m.abi_version, KILN_ABI_VERSION);
  EXPECT_EQ(m.format_version, opts.format_version);
  EXPECT_EQ(m.model_hash, opts.model_hash);
  EXPECT_STREQ(m.name, "chain");
  EXPECT_STREQ(m.profile, "host");
  EXPECT_EQ(std::string(m.target), host_profile().triple);
  EXPECT_EQ(m.n_vocab, kChainVocab);
  EXPECT_EQ(m.n_layer, 1);
  EXPECT_EQ(m.max_rows, kMaxRows);
  EXPECT_EQ(m.max_threads, kMaxThreads);
  EXPECT_EQ(m.max_streams, kChainStreams);
  EXPECT_EQ(m.max_context, 24);
  EXPECT_EQ((int64_t)m.weights_bytes, *b.g.int_attr("weights_bytes"));
  EXPECT_EQ((int64_t)m.arena_bytes, *b.g.int_attr("arena_bytes"));
  EXPECT_EQ((int64_t)m.kv_bytes, *b.g.int_attr("kv_bytes"));
  EXPECT_EQ((int64_t)m.kv_stream_bytes, *b.g.int_attr("kv_stream_bytes"));
  EXPECT_EQ(m.kv_bytes, kChainStreams * m.kv_stream_bytes);

  // In this order nearly every node waits at a barrier of its own (for a dependency or a
  // reused slot); the count is recorded, not pinned.
  r->reset_kv();
  ASSERT_TRUE(r->step(steps[0], {1}, steps[0].logit_rows.size() * kChainVocab).ok());
  EXPECT_LE(r->barriers(), computing_nodes(b.g));
  EXPECT_GT(r->barriers(), 10);
  RecordProperty("barriers", r->barriers());
}

// Independent nodes share a barrier interval: embed | matmul, matmul | add (x's slot is
// free after the second matmul, but add writes the logits).
TEST(Codegen, BarriersOnlyBetweenDependentNodes) {
  Builder b("barriers");
  Node* x = b.activations("x", 20, 32);
  Node* q = b.op(Op::MatMul, {x, b.random_weight("wq", DType::Q8_0, {24, 32})});
  Node* k = b.op(Op::MatMul, {x, b.random_weight("wk", DType::F16, {24, 32})});
  b.output(b.op(Op::Add, {q, k}));
  ASSERT_TRUE(b.finish().ok());
  auto r = compile(b.g);
  ASSERT_TRUE(r);
  check_steps(b.g, *r, row_sets(b.rng, 20), kFloatBound);
  ASSERT_TRUE(r->step(row_sets(b.rng, 20)[2], {1}, 5 * 24).ok());
  EXPECT_EQ(r->barriers(), 2);
}

// The tiny random LLaMA of tiny_model.h (two layers, q4_1 matrices, q8_0 embeddings) as
// `kiln compile` plans it, over a two-stream conversation; then again with LLaMA 3's rope
// frequency factors (rope_freqs.weight: a third operand of every rope).
TEST(Codegen, TinyLlamaMatchesInterpreter) {
  for (bool rope_factors : {false, true}) {
    SCOPED_TRACE(rope_factors ? "rope factors" : "plain rope");
    testing::TinyLlamaSpec spec;
    GgufWriter w = testing::tiny_llama_writer(spec);
    if (rope_factors) {
      const int64_t pairs = spec.embd / spec.heads / 2;
      std::vector<float> factors((size_t)pairs);
      for (int64_t i = 0; i < pairs; ++i) factors[(size_t)i] = i < pairs / 2 ? 1.0f : 1.0f + (float)i;
      w.add_tensor_f32("rope_freqs.weight", DType::F32, {pairs}, factors);
    }
    std::string bytes = w.bytes();
    auto f = GgufFile::parse(MappedFile::borrow(bytes.data(), bytes.size(), "tiny.gguf"));
    ASSERT_TRUE(f.ok()) << f.error().message;
    std::shared_ptr<const GgufFile> file(std::move(f).value());
    auto cfg = read_llama_config(*file);
    ASSERT_TRUE(cfg.ok()) << cfg.error().message;
    auto g = build_llama_graph(file, *cfg, {.max_context = 32, .max_streams = 2});
    ASSERT_TRUE(g.ok()) << g.error().message;
    Status s = testing::plan_for_codegen(*g, kMaxRows, kMaxThreads, "fuse-dequant-matmul,cse,dce,freeze-base,plan-memory");
    ASSERT_TRUE(s.ok()) << s.error().message;
    auto r = compile(*g);
    ASSERT_TRUE(r);
    Worst worst;
    std::mt19937 rng(5);
    worst(check_steps(*g, *r, conversation(rng, (int32_t)spec.vocab, 2), kFloatBound, kFloatBound));
    if (rope_factors) continue;
    // q, k and v run in one barrier interval, and so do gate and up (the kv_writes add one
    // barrier per layer): at least two nodes per layer have no barrier of their own.
    auto one = conversation(rng, (int32_t)spec.vocab, 2)[0];
    r->reset_kv();
    ASSERT_TRUE(r->step(one, {1}, one.logit_rows.size() * spec.vocab).ok());
    EXPECT_LE(r->barriers(), computing_nodes(*g) - 2 * cfg->n_layer);
    RecordProperty("barriers", r->barriers());
  }
}

// ---- constant operands ------------------------------------------------------------------

// Float activations and operands from constant nodes (dense data in the IR; static row
// counts), and i32 row indices from a constant, each case a graph of its own.
//
// DISABLED: codegen/lower.cpp cannot compile a graph in which a `constant` node is an
// operand of a computing node. Lowering::call() sorts the arguments of a kernel call into
// key constants and wrapper parameters with dyn_cast<ConstantInt/ConstantFP>, so the
// constant's GlobalVariable becomes a wrapper parameter; but the wrapper body picks its
// arguments with isa<llvm::Constant>, so it uses the global directly and every later
// parameter shifts by one. verifyModule rejects the result, e.g. for rms_norm(x, constant):
//   codegen produced invalid LLVM IR: Call parameter type does not match function signature!
//   call void @kiln_rms_norm(ptr %0, ptr @const, ptr %1, ptr %2, i64 45, float ..., i64 %3, i32 %4)
// (the same for matmul of a constant x, add of a constant row, gather_rows with constant
// rows). Even with the parameters lined up, the wrapper key does not name the global, so
// two constants through one kernel with the same shapes would share the first one's data:
// the last case checks that. Graphs from frontend/llama.cpp have no constants, but
// constant-fold produces them.
TEST(Codegen, ConstantOperands) {
  Worst worst;
  {
    SCOPED_TRACE("matmul of a constant x[3,64]");
    Builder b("const_matmul");
    Node* x = b.constant({3, 64}, random_floats(b.rng, 3 * 64));
    b.output(b.op(Op::MatMul, {x, b.random_weight("w", DType::Q8_0, {17, 64}, 0.125f)}));
    worst(check_graph(b, row_sets(b.rng, 1), kFloatBound));
  }
  {
    SCOPED_TRACE("rms_norm with a constant weight");
    Builder b("const_norm");
    Node* x = b.activations("x", 20, 45);
    b.output(b.op(Op::RmsNorm, {x, b.constant({45}, random_floats(b.rng, 45))}, {{"eps", 1e-5}}));
    worst(check_graph(b, row_sets(b.rng, 20), kFloatBound));
  }
  {
    SCOPED_TRACE("gather_rows with constant rows");
    Builder b("const_rows");
    DenseData rows;
    rows.dtype = DType::I32;
    rows.i32 = {0, 0};
    Node* r = b.g.add(Op::Constant, {}, {DType::I32, {2}}, {{"value", rows}});
    b.output(b.op(Op::GatherRows, {b.activations("x", 20, 45), r}));
    worst(check_graph(b, row_sets(b.rng, 20), kExact));
  }
  {
    SCOPED_TRACE("two different constant rows through one add kernel");
    Builder b("const_add");
    Node* x = b.activations("x", 20, 45);
    Node* y = b.op(Op::Add, {x, b.constant({45}, random_floats(b.rng, 45))});
    b.output(b.op(Op::Add, {y, b.constant({45}, random_floats(b.rng, 45))}));
    worst(check_graph(b, row_sets(b.rng, 20), kExact));
  }
}

// ---- determinism ------------------------------------------------------------------------

// The same graph built twice (and the same planned graph compiled twice) gives the same
// object bytes: artifacts are reproducible.
TEST(Codegen, CompilingTwiceGivesIdenticalObjects) {
  Builder a("chain", 7), b("chain", 7);
  build_chain(a);
  build_chain(b);
  ASSERT_TRUE(a.finish().ok());
  ASSERT_TRUE(b.finish().ok());
  auto oa = compile_graph(a.g, host_profile(), {});
  auto ob = compile_graph(b.g, host_profile(), {});
  auto oa2 = compile_graph(a.g, host_profile(), {});
  ASSERT_TRUE(oa.ok() && ob.ok() && oa2.ok());
  EXPECT_GT(oa->object.size(), 1000u);
  EXPECT_TRUE(oa->object == ob->object) << "two builds of one graph compile differently";
  EXPECT_TRUE(oa->object == oa2->object) << "one planned graph compiles differently twice";
}

}  // namespace
}  // namespace kiln
