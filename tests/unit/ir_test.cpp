// tests/unit/ir_test.cpp — the graph IR: text round trip, verifier diagnostics, and the
// reference interpreter checked op by op against small hand-computed values.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "ir/interpreter.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "support/half.h"

namespace kiln {
namespace {

using Attrs = std::map<std::string, Attr, std::less<>>;

// Whether `text` contains `part`, showing both when it does not.
::testing::AssertionResult contains(const std::string& text, std::string_view part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "wanted: " << part << "\n   got: " << text;
}

// Parses IR text that the test expects to be well formed and valid.
Graph must_parse(std::string_view text) {
  auto g = parse_graph(text, "test.kir");
  if (!g.ok()) {
    ADD_FAILURE() << g.error().message;
    return Graph("invalid");
  }
  Status s = verify(*g);
  if (!s.ok()) ADD_FAILURE() << s.error().message;
  return std::move(g).value();
}

std::string verify_message(const Graph& g) {
  Status s = verify(g);
  return s.ok() ? std::string("<verified>") : s.error().message;
}

// ---- printer / parser round trip -------------------------------------------------------

const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> kTypes = {
#define KILN_DTYPE(E, name, ggml, be, bb) DType::E,
#include "ir/dtypes.def"
  };
  return kTypes;
}

// Graphs that exercise the text format rather than the type rules: any op, any dtype,
// dynamic dimensions, every kind of attribute (odd strings, NaN, -0.0, extreme integers
// and floats, dense data) and locations with control and non-ASCII bytes.
class WildGraphs {
 public:
  explicit WildGraphs(uint32_t seed) : rng_(seed) {}

  Graph make() {
    Graph g(pick({"main", "g", "smollm2_135m", "a.b-c_1"}));
    std::vector<Node*> nodes;
    int count = 1 + (int)below(25);
    for (int i = 0; i < count; ++i) {
      const OpInfo& info = all_ops()[below(all_ops().size())];
      int nops = info.min_operands + (int)below((uint64_t)(info.max_operands - info.min_operands + 1));
      if (nops > 0 && nodes.empty()) continue;
      std::vector<Node*> operands;
      for (int k = 0; k < nops; ++k) operands.push_back(nodes[below(nodes.size())]);
      Attrs attrs;
      for (int k = (int)below(4); k > 0; --k)
        attrs[pick({"name", "eps", "theta", "value", "k", "x_y.z-w"})] = attr();
      std::string loc = below(2) ? "" : text();
      nodes.push_back(
          g.add(info.op, std::move(operands), type(), std::move(attrs), std::move(loc)));
    }
    return g;
  }

 private:
  std::mt19937 rng_;

  uint64_t below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  std::string pick(std::initializer_list<const char*> xs) { return xs.begin()[below(xs.size())]; }

  TensorType type() {
    TensorType t{all_dtypes()[below(all_dtypes().size())], {}};
    for (int r = (int)below(4); r > 0; --r)
      t.shape.push_back(below(4) == 0 ? kDynamic : (int64_t)below(5000));
    return t;
  }

  std::string text() {
    std::string s;
    for (int n = (int)below(12); n > 0; --n) s += (char)below(256);
    return s;
  }

  double real() {
    switch (below(8)) {
      case 0: return std::numeric_limits<double>::quiet_NaN();
      case 1: return below(2) ? INFINITY : -INFINITY;
      case 2: return -0.0;
      case 3: return std::numeric_limits<double>::denorm_min();
      case 4: return std::numeric_limits<double>::max();
      case 5: return (double)below(1000);  // integral values must stay floats
      default: {  // random mantissa and sign, exponent within about 2^+-120
        uint64_t bits = std::uniform_int_distribution<uint64_t>()(rng_) & ~(0x7ffull << 52);
        return std::bit_cast<double>(bits | (uint64_t)(900 + below(240)) << 52);
      }
    }
  }

  Attr attr() {
    switch (below(5)) {
      case 0: {
        int64_t v = std::uniform_int_distribution<int64_t>()(rng_);
        return below(4) == 0 ? std::numeric_limits<int64_t>::min() : v >> below(63);
      }
      case 1: return real();
      case 2: return text();
      case 3: {
        DenseData d;
        d.dtype = DType::F32;
        for (int n = (int)below(6); n > 0; --n) d.f32.push_back((float)real());
        return d;
      }
      default: {
        DenseData d;
        d.dtype = DType::I32;
        for (int n = (int)below(6); n > 0; --n)
          d.i32.push_back((int32_t)std::uniform_int_distribution<uint32_t>()(rng_));
        return d;
      }
    }
  }
};

bool same_bits(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) ||
         std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
}

bool same_attr(const Attr& a, const Attr& b) {
  if (a.index() != b.index()) return false;
  if (auto* d = std::get_if<double>(&a)) return same_bits(*d, std::get<double>(b));
  if (auto* x = std::get_if<DenseData>(&a)) {
    const auto& y = std::get<DenseData>(b);
    if (x->dtype != y.dtype || x->i32 != y.i32 || x->f32.size() != y.f32.size()) return false;
    for (size_t i = 0; i < x->f32.size(); ++i)
      if (!same_bits(x->f32[i], y.f32[i])) return false;
    return true;
  }
  return a == b;
}

TEST(TextRoundTrip, RandomGraphsPrintParsePrint) {
  for (uint32_t seed = 0; seed < 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Graph g = WildGraphs(seed).make();
    std::string text = print_graph(g);
    auto back = parse_graph(text);
    ASSERT_TRUE(back.ok()) << back.error().message << "\n" << text;
    EXPECT_EQ(print_graph(*back), text);
    // Not just the same text: the same values, bit for bit.
    std::vector<Node*> a = g.nodes(), b = back->nodes();
    ASSERT_EQ(a.size(), b.size());
    std::map<const Node*, size_t> ia, ib;
    for (size_t i = 0; i < a.size(); ++i) {
      ia[a[i]] = ib[b[i]] = i;
      EXPECT_EQ(a[i]->op(), b[i]->op());
      EXPECT_EQ(a[i]->type(), b[i]->type());
      EXPECT_EQ(a[i]->loc(), b[i]->loc());
      ASSERT_EQ(a[i]->operands().size(), b[i]->operands().size());
      for (size_t k = 0; k < a[i]->operands().size(); ++k)
        EXPECT_EQ(ia[a[i]->operand(k)], ib[b[i]->operand(k)]);
      ASSERT_EQ(a[i]->attrs().size(), b[i]->attrs().size());
      for (auto& [key, v] : a[i]->attrs()) {
        auto it = b[i]->attrs().find(key);
        ASSERT_NE(it, b[i]->attrs().end()) << key;
        EXPECT_TRUE(same_attr(v, it->second)) << "attribute " << key << " of %" << i;
      }
    }
  }
}

TEST(TextRoundTrip, CommentsAndNamedValues) {
  Graph g = must_parse(R"(// leading comment
graph @named {   // trailing comment
  %tokens = input {name = "tokens"} : i32[?]
  %table = constant {value = dense<f32: 1.0 2.0 3.0 4.0 5.0 6.0>} : f32[3,2]
  %h = embed(%table, %tokens) : f32[?,2] loc("token_embd")
  %out = output(%h) {name = "h"} : f32[?,2]
})");
  EXPECT_EQ(print_graph(g), R"(graph @named {
  %0 = input {name = "tokens"} : i32[?]
  %1 = constant {value = dense<f32: 1.0 2.0 3.0 4.0 5.0 6.0>} : f32[3,2]
  %2 = embed(%1, %0) : f32[?,2] loc("token_embd")
  %3 = output(%2) {name = "h"} : f32[?,2]
}
)");
}

TEST(TextRoundTrip, ParseErrorsNameFileLineAndProblem) {
  struct Case {
    const char* text;
    const char* where;
    const char* message;
  };
  const Case cases[] = {
      {"graph @g {\n  %a = nonsense : f32[1]\n}", "test.kir:2:", "unknown op 'nonsense'"},
      {"graph @g {\n  %a = silu(%b) : f32[1]\n}", "test.kir:2:", "use of undefined value %b"},
      {"graph @g {\n  %a = input {name = \"x\"} : f32[1]\n  %a = silu(%a) : f32[1]\n}",
       "test.kir:3:", "value %a is defined twice"},
      {"graph @g {\n  %a = input {name = \"x\", name = \"y\"} : f32[1]\n}",
       "test.kir:2:", "attribute 'name' given twice"},
      {"graph @g {\n  %a = input : f32[1.5]\n}", "test.kir:2:", "dimensions are integers"},
      {"graph @g {\n  %a = input : q9_9[1]\n}", "test.kir:2:", "unknown dtype 'q9_9'"},
      {"graph @g {\n  %a = constant {value = dense<i32: 1.5>} : i32[1]\n}",
       "test.kir:2:", "i32 dense data needs integers"},
      {"graph @g {\n  %a = constant {value = dense<f16: 1.0>} : f16[1]\n}",
       "test.kir:2:", "dense data must be f32 or i32"},
      {"graph @g {\n  %a = input {name = \"x} : f32[1]\n}", "test.kir:", "unterminated string"},
      {"graph @g {\n  %a = input {n = 99999999999999999999} : f32[1]\n}",
       "test.kir:2:", "out of range"},
      // (reported at the start of the next line, 3:1; see the note to the lead)
      {"graph @g {\n  %a = silu : f32[1]\n}", "test.kir:", "'silu' takes 1 operands, got 0"},
      {"graph @g {\n  %a = input : f32[1]\n", "test.kir:", "expected '}' at the end of the graph"},
      {"graph @g {\n}\ngraph @h {\n}\n", "test.kir:3:", "unexpected text after the graph"},
      {"grph @g {\n}", "test.kir:1:1:", "expected 'graph'"},
  };
  for (const Case& c : cases) {
    auto g = parse_graph(c.text, "test.kir");
    ASSERT_FALSE(g.ok()) << c.text;
    const std::string& m = g.error().message;
    EXPECT_EQ(m.rfind(c.where, 0), 0u) << "got: " << m << "\nwanted it to start with: " << c.where;
    EXPECT_TRUE(contains(m, c.message));
  }
}

// ---- verifier --------------------------------------------------------------------------

TEST(Verifier, ReportsEveryProblemWithNodeOpAndLocation) {
  Graph g("bad");
  Node* x = g.add(Op::Input, {}, {DType::F32, {kDynamic, 4}}, {{"name", std::string("x")}});
  Node* w = g.add(Op::Weight, {}, {DType::F32, {8, 3}}, {{"name", std::string("w")}});
  g.add(Op::MatMul, {x, w}, {DType::F32, {kDynamic, 8}}, {}, "blk.0.attn_q");
  g.add(Op::Silu, {x}, {DType::F32, {kDynamic, 5}});
  std::string m = verify_message(g);
  EXPECT_TRUE(contains(m, "graph @bad failed verification (2 problems)"));
  EXPECT_TRUE(contains(m,
                       "%2 = matmul at \"blk.0.attn_q\": x f32[?,4] has 4 columns but the weight "
                       "f32[8,3] expects 3"));
  EXPECT_TRUE(contains(m, "%3 = silu: declared type f32[?,5] but the operands give f32[?,4]"));
}

TEST(Verifier, OperandDefinedAfterUseOrMissing) {
  Graph g;
  Node* y = g.add(Op::Input, {}, {DType::F32, {2}}, {{"name", std::string("y")}});
  // insert_before can place a user ahead of its operand; the verifier must say so.
  Node* late = g.add(Op::Silu, {y}, {DType::F32, {2}});
  g.insert_before(y, Op::Silu, {late}, {DType::F32, {2}});
  g.add(Op::Silu, {nullptr}, {DType::F32, {2}});
  std::string m = verify_message(g);
  EXPECT_TRUE(contains(m, "%0 = silu: operand 0 is not defined before it"));
  EXPECT_TRUE(contains(m, "%3 = silu: operand 0 is not defined before it"));
  // The printer shows such graphs rather than crashing on them.
  EXPECT_TRUE(contains(print_graph(g), "silu(%<undefined>)"));
}

TEST(Verifier, TypeRulesOfEachOp) {
  struct Case {
    const char* body;
    const char* message;
  };
  const Case cases[] = {
      {"%t = input {name = \"t\"} : f32[?]\n%e = constant {value = dense<f32: 1.0 2.0>} : "
       "f32[1,2]\n"
       "%h = embed(%e, %t) : f32[?,2]",
       "tokens must be i32[T], got f32[?]"},
      {"%x = input {name = \"x\"} : f32[?,4]\n%w = constant {value = dense<f32: 1.0 2.0 3.0>} : "
       "f32[3]\n"
       "%n = rms_norm(%x, %w) {eps = 1e-5} : f32[?,4]",
       "weight f32[3] does not match the rows of f32[?,4]"},
      {"%x = input {name = \"x\"} : f32[?,4]\n%y = input {name = \"y\"} : f32[?,3]\n%a = add(%x, "
       "%y) : f32[?,4]",
       "shapes f32[?,4] and f32[?,3] do not match"},
      {"%x = input {name = \"x\"} : f32[?,6]\n%p = input {name = \"p\"} : i32[?]\n"
       "%r = rope(%x, %p) {head_dim = 4, n_rot = 4, theta = 10000.0} : f32[?,6]",
       "head_dim 4 does not divide the 6 features"},
      {"%x = input {name = \"x\"} : f32[?,4]\n%p = input {name = \"p\"} : f32[?]\n"
       "%r = rope(%x, %p) {head_dim = 4, n_rot = 4, theta = 10000.0} : f32[?,4]",
       "positions must be i32[T], got f32[?]"},
      {"%x = input {name = \"x\"} : f32[2,4]\n%p = input {name = \"p\"} : i32[3]\n"
       "%r = rope(%x, %p) {head_dim = 4, n_rot = 4, theta = 10000.0} : f32[2,4]",
       "positions i32[3] do not match the 2 rows"},
      {"%c = state {name = \"c\"} : f32[8,4]\n%x = input {name = \"x\"} : f32[?,3]\n%p = input "
       "{name = \"p\"} : i32[?]\n"
       "%w = kv_write(%c, %x, %p) : f32[8,4]",
       "x f32[?,3] does not fit cache rows of f32[8,4]"},
      {"%q = input {name = \"q\"} : f32[?,8]\n%k = state {name = \"k\"} : f32[8,4]\n%v = state "
       "{name = \"v\"} : f32[8,2]\n"
       "%p = input {name = \"p\"} : i32[?]\n"
       "%a = attention(%q, %k, %v, %p) {head_dim = 2, n_head = 4, n_kv_head = 2} : f32[?,8]",
       "cache f32[8,2] must have n_kv_head*head_dim = 4 columns"},
      {"%q = input {name = \"q\"} : f32[?,8]\n%k = state {name = \"k\"} : f32[8,4]\n%p = input "
       "{name = \"p\"} : i32[?]\n"
       "%a = attention(%q, %k, %k, %p) {head_dim = 2, n_head = 3, n_kv_head = 2} : f32[?,8]",
       "n_head 3 must be a positive multiple of n_kv_head 2"},
      {"%x = input {name = \"x\"} : f32[?,4]\n%o = output(%x) : f32[?,4]",
       "missing attribute 'name'"},
      {"%w = weight {name = \"w\"} : f32[?,4]", "weight must have a static shape"},
      {"%s = state {name = \"s\"} : f32[?,4]", "state must have a static shape"},
      {"%i = input {name = 3} : f32[4]", "missing string attribute 'name'"},
  };
  for (const Case& c : cases) {
    auto g = parse_graph(std::string("graph @g {\n") + c.body + "\n}");
    ASSERT_TRUE(g.ok()) << g.error().message;
    std::string m = verify_message(*g);
    EXPECT_TRUE(contains(m, c.message));
  }
}

// A weight source backed by memory, for tests.
class MemoryWeights final : public WeightSource {
 public:
  void put(std::string name, DType dt, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    data_[std::move(name)] = {dt, std::move(shape), std::move(bytes)};
  }
  std::optional<WeightView> find(std::string_view name) const override {
    auto it = data_.find(name);
    if (it == data_.end()) return std::nullopt;
    const Entry& e = it->second;
    return WeightView{e.dtype, e.shape, e.bytes.data(), e.bytes.size()};
  }
  std::string describe() const override { return "memory.gguf"; }

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry, std::less<>> data_;
};

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(Verifier, WeightsAreCheckedAgainstTheirSource) {
  auto g = parse_graph(R"(graph @w {
  %a = weight {name = "present"} : f32[2,2]
  %b = weight {name = "absent"} : f32[2,2]
  %c = weight {name = "reshaped"} : f32[4,1]
})");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(verify_message(*g), "<verified>");  // no source: names are not checked
  auto w = std::make_shared<MemoryWeights>();
  w->put("present", DType::F32, {2, 2}, f32_bytes({1, 2, 3, 4}));
  w->put("reshaped", DType::F32, {2, 2}, f32_bytes({1, 2, 3, 4}));
  g->set_weights(w);
  std::string m = verify_message(*g);
  EXPECT_TRUE(contains(m, "%1 = weight (<input>:3 %b): weight \"absent\" is not in memory.gguf"));
  EXPECT_TRUE(contains(m,
                       "%2 = weight (<input>:4 %c): weight \"reshaped\" is f32[2,2] in memory.gguf, but the node "
                       "declares f32[4,1]"));
  EXPECT_EQ(m.find("present"), std::string::npos) << m;
}

// ---- interpreter -----------------------------------------------------------------------

// A parsed graph and an interpreter over it (the interpreter keeps a reference).
struct Runner {
  Graph g;
  Interpreter interp;
  explicit Runner(std::string_view text) : g(must_parse(text)), interp(g) {}
  Result<std::map<std::string, Tensor>> run(const std::map<std::string, Tensor>& in) {
    return interp.run(in);
  }
  std::vector<float> out(const std::map<std::string, Tensor>& in, const std::string& name) {
    auto r = run(in);
    if (!r.ok()) {
      ADD_FAILURE() << r.error().message;
      return {};
    }
    return r->at(name).f32;
  }
};

void expect_near(const std::vector<float>& got, const std::vector<double>& want,
                 double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

TEST(Interpreter, Embed) {
  Runner r(R"(graph @g {
  %t = input {name = "t"} : i32[?]
  %e = constant {value = dense<f32: 0.0 0.5 1.0 1.5 2.0 2.5>} : f32[3,2]
  %h = embed(%e, %t) : f32[?,2]
  %o = output(%h) {name = "h"} : f32[?,2]
})");
  auto got = r.run({{"t", Tensor::i32_of({3}, {2, 0, 2})}});
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->at("h").shape, (std::vector<int64_t>{3, 2}));
  expect_near(got->at("h").f32, {2.0, 2.5, 0.0, 0.5, 2.0, 2.5});
}

TEST(Interpreter, EmbedFromQuantizedWeight) {
  // One q8_0 row of 32: scale 0.5, q = j - 16.
  BlockQ8_0 b;
  b.d = f32_to_fp16(0.5f);
  for (int j = 0; j < 32; ++j) b.qs[j] = (int8_t)(j - 16);
  std::vector<uint8_t> bytes(sizeof b);
  std::memcpy(bytes.data(), &b, sizeof b);
  auto parsed = parse_graph(R"(graph @g {
  %t = input {name = "t"} : i32[?]
  %e = weight {name = "emb"} : q8_0[1,32]
  %h = embed(%e, %t) : f32[?,32]
  %o = output(%h) {name = "h"} : f32[?,32]
})");
  ASSERT_TRUE(parsed.ok());
  Graph g = std::move(parsed).value();
  auto w = std::make_shared<MemoryWeights>();
  w->put("emb", DType::Q8_0, {1, 32}, bytes);
  g.set_weights(w);
  ASSERT_EQ(verify_message(g), "<verified>");
  auto got = Interpreter(g).run({{"t", Tensor::i32_of({1}, {0})}});
  ASSERT_TRUE(got.ok()) << got.error().message;
  std::vector<double> want;
  for (int j = 0; j < 32; ++j) want.push_back(0.5 * (j - 16));
  expect_near(got->at("h").f32, want);
  auto whole = load_weight(g, g.nodes()[1]);
  ASSERT_TRUE(whole.ok());
  expect_near(whole->f32, want);
}

TEST(Interpreter, OutOfRangeTokenIsAnError) {
  Runner r(R"(graph @g {
  %t = input {name = "t"} : i32[?]
  %e = constant {value = dense<f32: 0.0 0.5 1.0 1.5>} : f32[2,2]
  %h = embed(%e, %t) : f32[?,2] loc("token_embd")
  %o = output(%h) {name = "h"} : f32[?,2]
})");
  for (int32_t bad : {2, -1, 1 << 30}) {
    auto got = r.run({{"t", Tensor::i32_of({2}, {0, bad})}});
    ASSERT_FALSE(got.ok());
    EXPECT_TRUE(contains(got.error().message, "embed at token_embd: token " + std::to_string(bad) +
                                                  " at index 1 is outside the vocabulary of 2"));
  }
}

TEST(Interpreter, RmsNorm) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,2]
  %w = constant {value = dense<f32: 1.0 2.0>} : f32[2]
  %n = rms_norm(%x, %w) {eps = 0.5} : f32[?,2]
  %o = output(%n) {name = "n"} : f32[?,2]
})");
  // Row [3,4]: mean of squares 12.5, + eps 0.5 = 13. Row [0,0]: 0 / sqrt(0.5) = 0.
  double s = 1 / std::sqrt(13.0);
  expect_near(r.out({{"x", Tensor::f32_of({2, 2}, {3, 4, 0, 0})}}, "n"), {3 * s, 8 * s, 0, 0});
}

TEST(Interpreter, MatMulAddMulSiluLastRow) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,2]
  %w = constant {value = dense<f32: 1.0 2.0 -1.0 0.5 0.0 3.0>} : f32[3,2]
  %m = matmul(%x, %w) : f32[?,3]
  %b = constant {value = dense<f32: 10.0 20.0 30.0>} : f32[3]
  %b1 = constant {value = dense<f32: 2.0 3.0 4.0>} : f32[1,3]
  %a = add(%m, %b) : f32[?,3]
  %p = mul(%a, %b1) : f32[?,3]
  %q = mul(%p, %p) : f32[?,3]
  %s = silu(%x) : f32[?,2]
  %l = last_row(%q) : f32[1,3]
  %o1 = output(%m) {name = "m"} : f32[?,3]
  %o2 = output(%p) {name = "p"} : f32[?,3]
  %o3 = output(%s) {name = "s"} : f32[?,2]
  %o4 = output(%l) {name = "l"} : f32[1,3]
})");
  auto got = r.run({{"x", Tensor::f32_of({2, 2}, {1, 1, 2, -1})}});
  ASSERT_TRUE(got.ok()) << got.error().message;
  // x @ W^T: [1,1] -> [3, -0.5, 3]; [2,-1] -> [0, -2.5, -3].
  expect_near(got->at("m").f32, {3, -0.5, 3, 0, -2.5, -3});
  expect_near(got->at("p").f32, {26, 58.5, 132, 20, 52.5, 108});
  double e1 = 1 / (1 + std::exp(-1.0)), e2 = 2 / (1 + std::exp(-2.0)),
         em = -1 / (1 + std::exp(1.0));
  expect_near(got->at("s").f32, {e1, e1, e2, em});
  EXPECT_EQ(got->at("l").shape, (std::vector<int64_t>{1, 3}));
  expect_near(got->at("l").f32, {400, 2756.25, 11664}, 1e-3);
}

TEST(Interpreter, RopeOnKnownAngles) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,8]
  %p = input {name = "p"} : i32[?]
  %full = rope(%x, %p) {head_dim = 4, n_rot = 4, theta = 10000.0} : f32[?,8]
  %part = rope(%x, %p) {head_dim = 4, n_rot = 2, theta = 10000.0} : f32[?,8]
  %o1 = output(%full) {name = "full"} : f32[?,8]
  %o2 = output(%part) {name = "part"} : f32[?,8]
})");
  // Two heads of 4. Pair i of each head turns by pos * theta^(-2i/n_rot).
  std::map<std::string, Tensor> in = {{"x", Tensor::f32_of({2, 8}, {1, 0, 1, 0, 0, 1, 5, 6,  //
                                                                    1, 0, 1, 0, 0, 1, 5, 6})},
                                      {"p", Tensor::i32_of({2}, {0, 1})}};
  auto got = r.run(in);
  ASSERT_TRUE(got.ok()) << got.error().message;
  double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  expect_near(got->at("full").f32, {1, 0, 1, 0, 0, 1, 5, 6,  // position 0: unchanged
                                    c1, s1, c2, s2, -s1, c1, 5 * c2 - 6 * s2, 5 * s2 + 6 * c2});
  // n_rot 2: only the first pair of each head turns, the rest pass through.
  expect_near(got->at("part").f32, {1, 0, 1, 0, 0, 1, 5, 6,  //
                                    c1, s1, 1, 0, -s1, c1, 5, 6});
}

const char* kAttention = R"(graph @g {
  %q = input {name = "q"} : f32[?,4]
  %k = input {name = "k"} : f32[3,2]
  %v = input {name = "v"} : f32[3,2]
  %p = input {name = "p"} : i32[?]
  %a = attention(%q, %k, %v, %p) {head_dim = 2, n_head = 2, n_kv_head = 1} : f32[?,4]
  %o = output(%a) {name = "a"} : f32[?,4]
})";

TEST(Interpreter, AttentionOnePosition) {
  Runner r(kAttention);
  // At position 0 only cache row 0 is visible, so every head returns v[0].
  auto out = r.out({{"q", Tensor::f32_of({1, 4}, {5, -3, 0.25, 9})},
                    {"k", Tensor::f32_of({3, 2}, {1, 2, 100, 100, 100, 100})},
                    {"v", Tensor::f32_of({3, 2}, {7, 8, -50, -50, -50, -50})},
                    {"p", Tensor::i32_of({1}, {0})}},
                   "a");
  expect_near(out, {7, 8, 7, 8});
}

TEST(Interpreter, AttentionTwoPositionsCausalAndGrouped) {
  Runner r(kAttention);
  // Head 0 has q = [1,0], head 1 q = [0,1]; both read the one kv head (GQA 2:1).
  // Row 1 sees k0 = [0,0], k1 = [2,0]: head 0 scores 0 and 2/sqrt(2); head 1 scores 0, 0.
  // Cache row 2 is beyond both positions, so its huge key must not count.
  auto out = r.out({{"q", Tensor::f32_of({2, 4}, {1, 0, 0, 1, 1, 0, 0, 1})},
                    {"k", Tensor::f32_of({3, 2}, {0, 0, 2, 0, 1000, 1000})},
                    {"v", Tensor::f32_of({3, 2}, {1, 0, 0, 1, -99, -99})},
                    {"p", Tensor::i32_of({2}, {0, 1})}},
                   "a");
  double w1 = std::exp(std::sqrt(2.0)) / (1 + std::exp(std::sqrt(2.0)));
  expect_near(out, {1, 0, 1, 0, 1 - w1, w1, 0.5, 0.5});
}

TEST(Interpreter, KvWriteThenAttentionSeesTheWrittenRows) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,2]
  %p = input {name = "p"} : i32[?]
  %kc = state {name = "k"} : f32[4,2]
  %vc = state {name = "v"} : f32[4,2]
  %k = kv_write(%kc, %x, %p) : f32[4,2]
  %v = kv_write(%vc, %x, %p) : f32[4,2]
  %a = attention(%x, %k, %v, %p) {head_dim = 2, n_head = 1, n_kv_head = 1} : f32[?,2]
  %o = output(%a) {name = "a"} : f32[?,2]
})");
  // Prefill rows 0 and 1 with zero keys and values.
  auto step1 =
      r.out({{"x", Tensor::f32_of({2, 2}, {0, 0, 0, 0})}, {"p", Tensor::i32_of({2}, {0, 1})}}, "a");
  expect_near(step1, {0, 0, 0, 0});
  // A step at position 3 with x = [3, 0] writes row 3 and attends over rows 0..3 (row 2
  // never written, so zero): row 3 scores 9/sqrt(2), the other three score 0.
  auto step2 = r.out({{"x", Tensor::f32_of({1, 2}, {3, 0})}, {"p", Tensor::i32_of({1}, {3})}}, "a");
  double e = std::exp(9 / std::sqrt(2.0)), w = e / (3 + e);
  expect_near(step2, {3 * w, 0});
  // The state holds every written row; rows never written (2) are zero.
  const Tensor& k = *r.interp.state().at("k");
  expect_near(k.f32, {0, 0, 0, 0, 0, 0, 3, 0});
  r.interp.reset_state();
  expect_near(r.interp.state().at("v")->f32, {0, 0, 0, 0, 0, 0, 0, 0});
}

TEST(Interpreter, OutOfRangePositionsAreErrors) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,2]
  %p = input {name = "p"} : i32[?]
  %q = input {name = "q"} : i32[?]
  %kc = state {name = "k"} : f32[4,2]
  %k = kv_write(%kc, %x, %p) : f32[4,2] loc("blk.0.k_cache")
  %a = attention(%x, %k, %k, %q) {head_dim = 2, n_head = 1, n_kv_head = 1} : f32[?,2] loc("blk.0.attn")
  %o = output(%a) {name = "a"} : f32[?,2]
})");
  Tensor x = Tensor::f32_of({1, 2}, {1, 2});
  auto bad_write =
      r.run({{"x", x}, {"p", Tensor::i32_of({1}, {4})}, {"q", Tensor::i32_of({1}, {0})}});
  ASSERT_FALSE(bad_write.ok());
  EXPECT_TRUE(contains(bad_write.error().message,
                       "kv_write at blk.0.k_cache: position 4 is outside the cache of 4 rows"));
  auto bad_read =
      r.run({{"x", x}, {"p", Tensor::i32_of({1}, {0})}, {"q", Tensor::i32_of({1}, {-1})}});
  ASSERT_FALSE(bad_read.ok());
  EXPECT_TRUE(contains(bad_read.error().message,
                       "attention at blk.0.attn: position -1 is outside the cache of 4 rows"));
}

TEST(Interpreter, MissingAndMisshapedInputsAreErrors) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,2]
  %o = output(%x) {name = "y"} : f32[?,2]
})");
  auto missing = r.run({});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, "missing input \"x\"");
  auto wrong = r.run({{"x", Tensor::f32_of({2, 3})}});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().message, "input \"x\" must be f32[?,2], got f32[2,3]");
  auto dtype = r.run({{"x", Tensor::i32_of({1, 2}, {1, 2})}});
  ASSERT_FALSE(dtype.ok());
  auto ok = r.run({{"x", Tensor::f32_of({0, 2})}});  // zero tokens is a valid step
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->at("y").shape, (std::vector<int64_t>{0, 2}));
}

// Dynamic dimensions are checked against each other at run time: positions shorter than
// x are an Error, not a read past the end of the positions tensor.
TEST(Interpreter, DynamicRowCountsMustAgree) {
  Runner r(R"(graph @g {
  %x = input {name = "x"} : f32[?,2]
  %p = input {name = "p"} : i32[?]
  %r = rope(%x, %p) {head_dim = 2, n_rot = 2, theta = 10000.0} : f32[?,2]
  %o = output(%r) {name = "r"} : f32[?,2]
})");
  auto got = r.run({{"x", Tensor::f32_of({3, 2})}, {"p", Tensor::i32_of({1}, {0})}});
  EXPECT_FALSE(got.ok());
}

}  // namespace
}  // namespace kiln
