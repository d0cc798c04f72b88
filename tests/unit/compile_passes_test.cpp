// tests/unit/compile_passes_test.cpp — freeze-base and plan-memory on a tiny LLaMA:
// numerically a no-op (the interpreter gives bit-identical logits before and after), and
// the plan they record is sound (aligned, in bounds, no two live values overlap).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/freeze_base.h"
#include "passes/pass.h"
#include "passes/passes.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

struct Tiny {
  std::string bytes;
  std::shared_ptr<const GgufFile> file;
  LlamaConfig cfg;
};

Tiny tiny(testing::TinyLlamaSpec spec = {}) {
  Tiny t;
  t.bytes = testing::tiny_llama_gguf(spec);
  auto f = GgufFile::parse(MappedFile::borrow(t.bytes.data(), t.bytes.size(), "tiny.gguf"));
  EXPECT_TRUE(f.ok());
  t.file = std::shared_ptr<const GgufFile>(std::move(f).value());
  t.cfg = read_llama_config(*t.file).value();
  return t;
}

Graph lower(const Tiny& t, int64_t streams = 1) {
  auto g = build_llama_graph(t.file, t.cfg, {.max_context = 32, .max_streams = streams});
  EXPECT_TRUE(g.ok()) << g.error().message;
  g->set_attr("max_rows", int64_t{8});
  g->set_attr("max_threads", int64_t{2});
  return std::move(g).value();
}

std::vector<float> run_steps(const Graph& g) {
  Interpreter in(g);
  std::vector<float> all;
  auto a = in.run(single_stream_inputs({1, 5, 9, 3, 7}, 0));
  EXPECT_TRUE(a.ok()) << a.error().message;
  auto b = in.run(single_stream_inputs({11}, 5));
  EXPECT_TRUE(b.ok()) << b.error().message;
  all = (*a)["logits"].f32;
  all.insert(all.end(), (*b)["logits"].f32.begin(), (*b)["logits"].f32.end());
  return all;
}

Status run_pipeline(Graph& g, std::string_view passes) {
  PassManagerOptions opts;
  opts.verify_each = true;
  PassManager pm(opts);
  KILN_TRY(pm.add_pipeline(passes));
  return pm.run(g);
}

TEST(FreezeBase, SameLogitsFromTheBlob) {
  testing::TinyLlamaSpec spec;
  spec.matrix_type = DType::Q4_0;
  Tiny t = tiny(spec);
  Graph g = lower(t);
  std::vector<float> before = run_steps(g);
  ASSERT_TRUE(run_pipeline(g, "freeze-base").ok());
  auto* frozen = dynamic_cast<const FrozenWeights*>(g.weights().get());
  ASSERT_NE(frozen, nullptr);
  EXPECT_EQ(frozen->blob().size() % 64, 0u);
  EXPECT_EQ(*g.int_attr("weights_bytes"), (int64_t)frozen->blob().size());
  for (Node* n : g.nodes_of(Op::Weight)) {
    ASSERT_TRUE(n->int_attr("offset"));
    EXPECT_EQ(*n->int_attr("offset") % 64, 0);
    auto e = frozen->entries().find(*n->str_attr("name"));
    ASSERT_NE(e, frozen->entries().end());
    EXPECT_LE(e->second.offset + e->second.nbytes, frozen->blob().size());
  }
  EXPECT_EQ(run_steps(g), before);  // bit-identical: same bytes, same interpreter
  // A second run is a no-op.
  auto again = create_freeze_base_pass()->run(g);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST(FreezeBase, NeedsMaxRows) {
  Tiny t = tiny();
  auto g = build_llama_graph(t.file, t.cfg, {.max_context = 16});
  Status s = run_pipeline(*g, "freeze-base");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("max_rows"), std::string::npos);
}

// A NaN or infinity in any weight (a float element, or a quantized block's scale) is an
// error naming the tensor and the element, not logits of NaN at run time.
TEST(FreezeBase, NonFiniteWeightsAreRefused) {
  for (DType dt : {DType::F32, DType::F16, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(dt));
    testing::TinyLlamaSpec spec;
    spec.matrix_type = dt;
    Tiny t = tiny(spec);
    const GgufTensor* w = t.file->tensor("blk.1.ffn_down.weight");
    ASSERT_NE(w, nullptr);
    ASSERT_EQ(w->type, dt);
    const int64_t cols = (int64_t)w->ne[0], at = 2 * cols + 5;  // row 2, column 5
    auto* data = const_cast<uint8_t*>(w->data);  // the test's own bytes, borrowed
    const uint16_t f16_inf = 0x7c00;
    if (dt == DType::F32) {
      const float nan = NAN;
      std::memcpy(data + at * 4, &nan, 4);
    } else if (dt == DType::F16) {
      std::memcpy(data + at * 2, &f16_inf, 2);
    } else {  // the scale of the block holding element `at`: the block becomes NaN/inf
      std::memcpy(data + (at / 32) * sizeof(BlockQ4_0), &f16_inf, 2);
    }
    // Quantized weights are also checked after pack-weights has interleaved their rows.
    for (bool pack : {false, true}) {
      if (pack && dt != DType::Q4_0) continue;
      Graph g = lower(t);
      g.set_attr("int8_activations", int64_t{1});
      Status s = run_pipeline(g, pack ? "fuse-dequant-matmul,pack-weights,freeze-base" : "freeze-base");
      ASSERT_FALSE(s.ok());
      if (pack) {
        bool packed = false;
        for (Node* n : g.nodes_of(Op::Weight))
          packed |= *n->str_attr("name") == "blk.1.ffn_down.weight" && n->int_attr("packed_rows").value_or(0) > 0;
        EXPECT_TRUE(packed) << "pack-weights left the weight as it was: the case tests nothing new";
      }
      const std::string want = dt == DType::Q4_0 ? "at row 2, column 0" : "at row 2, column 5";
      for (std::string_view part : {std::string_view("\"blk.1.ffn_down.weight\""), std::string_view(want),
                                    std::string_view("corrupt")})
        EXPECT_NE(s.error().message.find(part), std::string::npos) << s.error().message;
    }
  }
}

TEST(PlanMemory, LiveValuesNeverOverlapAndLogitsGoToTheCaller) {
  Tiny t = tiny();
  Graph g = lower(t, 3);
  std::vector<float> before = run_steps(g);
  ASSERT_TRUE(run_pipeline(g, "fuse-dequant-matmul,cse,dce,freeze-base,plan-memory").ok());
  EXPECT_EQ(run_steps(g), before);

  int64_t arena = *g.int_attr("arena_bytes");
  int64_t kv_stream = *g.int_attr("kv_stream_bytes");
  EXPECT_EQ(*g.int_attr("kv_bytes"), 3 * kv_stream);
  // layers x (k, v) x C x F x 2 bytes (f16 cache), rounded up to 16 KiB with several
  // streams (so that streams can share a prompt's memory pages)
  EXPECT_EQ(kv_stream, 16384);
  EXPECT_GE(kv_stream, 2 * 2 * 32 * 32 * 2);
  std::vector<Node*> nodes = g.nodes();
  std::unordered_map<const Node*, size_t> index, last_use;
  for (size_t i = 0; i < nodes.size(); ++i) {
    index[nodes[i]] = i;
    for (Node* o : nodes[i]->operands()) last_use[o] = i;
  }
  struct Live { size_t from, to; int64_t off, size; const Node* n; };
  std::vector<Live> live;
  for (Node* n : nodes) {
    if (auto off = n->int_attr("arena_offset")) {
      int64_t rows = n->type().shape[0] == kDynamic ? 8 : n->type().shape[0];
      int64_t size = rows * n->type().shape[1] * 4;
      EXPECT_EQ(*off % 64, 0);
      EXPECT_LE(*off + size, arena);
      live.push_back({index[n], last_use[n], *off, size, n});
    }
  }
  ASSERT_GT(live.size(), 10u);
  for (size_t a = 0; a < live.size(); ++a)
    for (size_t b = a + 1; b < live.size(); ++b) {
      bool time = live[a].from <= live[b].to && live[b].from <= live[a].to;
      bool space = live[a].off < live[b].off + live[b].size && live[b].off < live[a].off + live[a].size;
      EXPECT_FALSE(time && space) << print_graph(g);
    }
  EXPECT_EQ(g.find_output("logits")->operand(0)->str_attr("place"), "logits");
  for (Node* n : g.nodes_of(Op::Attention)) EXPECT_TRUE(n->int_attr("scratch_offset"));
  // Reuse: the arena is far smaller than the sum of every value.
  int64_t total = 0;
  for (auto& l : live) total += l.size;
  EXPECT_LT(arena, total / 3);
  // The plan prints and parses back.
  auto parsed = parse_graph(print_graph(g));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(print_graph(*parsed), print_graph(g));
}

}  // namespace
}  // namespace kiln
