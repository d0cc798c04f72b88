// passes/lora_as_input.cpp — LoRA adapters become runtime inputs of one frozen graph.
//
// Every matmul whose weight is a LoRA target projection (blk.N.attn_q/k/v/output,
// ffn_gate/up/down: the table in frontend/lora_names.h) gains a low-rank side path whose
// factors are graph inputs, so any adapter of rank <= R can be bound at run time without
// recompiling and without touching the frozen base weights:
//
//   before                              after
//
//   x ──┬──────────► matmul(x, W) ─► y  x ──┬──────────► matmul(x, W) ──┐
//       │                                   │                           add ─► y
//       ▼                                   └► lora(x, A, B, s, slots, r) ┘
//                                                  ▲  ▲  ▲     ▲      ▲
//                   input lora.<W>.a f32[K,R,in] ──┘  │  │     │      │
//                   input lora.<W>.b f32[K,R,out] ────┘  │     │      │
//                   input lora.scale f32[K] (shared) ────┘     │      │
//                   input adapter_slots i32[?] (shared) ───────┘      │
//                   input lora.<W>.rank i32[K] ───────────────────────┘
//
// K (graph attribute lora_slots, default 4) adapters are resident at once; R (lora_rank,
// default 16) is the compiled maximum rank. B is stored rank-major ([R,out] per slot, B
// transposed), so the factors of rank r are the first r rows of both A and B: with the
// slot's rank on this target as an input (0 where the adapter does not touch the
// projection), the kernel reads exactly the adapter's own weights, not the padding up to
// R or the targets it leaves alone (the demo adapters, rank 8 on q/k/v/o, read 5x less
// per token than padded to 16 on all seven). Each row picks
// its slot, so streams with different adapters share one forward pass; slot 0 is by
// convention the zero adapter (the base model). The graph attribute lora_targets ("q,v";
// default: all seven) picks the modules. The pass records lora_slots and lora_rank on the
// graph and does nothing if the graph already has lora nodes.
#include <fmt/format.h>

#include "frontend/lora_names.h"  // header-only name table; passes still link kiln_ir only
#include "passes/lora_as_input.h"
#include "passes/passes.h"

namespace kiln {

Result<std::vector<bool>> parse_lora_targets(std::string_view list) {
  std::vector<bool> on(lora_names::kNumModules, list.empty());
  for (size_t b = 0; b < list.size();) {
    size_t e = list.find(',', b);
    if (e == std::string_view::npos) e = list.size();
    std::string_view name = list.substr(b, e - b);
    int m = lora_names::module_index(name);
    if (m < 0)
      return make_error("unknown LoRA target '{}' (expected q, k, v, o, gate, up, down)", name);
    on[(size_t)m] = true;
    b = e + 1;
  }
  return on;
}

namespace {

constexpr int64_t kDefaultSlots = 4;
constexpr int64_t kDefaultRank = 16;
constexpr int64_t kMaxRank = 64;  // KILN_LORA_MAX_RANK in codegen/kernels/lora.c

class LoraAsInputPass final : public Pass {
 public:
  std::string_view name() const override { return "lora-as-input"; }

  Result<bool> run(Graph& g) override {
    if (!g.nodes_of(Op::Lora).empty()) return false;
    int64_t K = g.int_attr("lora_slots").value_or(kDefaultSlots);
    int64_t R = g.int_attr("lora_rank").value_or(kDefaultRank);
    if (K < 1) return make_error("lora_slots must be at least 1, got {}", K);
    if (R < 1) return make_error("lora_rank must be at least 1, got {}", R);
    if (R > kMaxRank) return make_error("lora_rank {} is above {}, the most the LoRA kernel holds", R, kMaxRank);
    std::string_view list;
    if (auto it = g.attrs().find("lora_targets"); it != g.attrs().end())
      if (auto* str = std::get_if<std::string>(&it->second)) list = *str;
    KILN_ASSIGN(std::vector<bool> wanted, parse_lora_targets(list));

    std::vector<Node*> nodes = g.nodes();
    std::vector<std::pair<size_t, Node*>> targets;  // (index in `nodes`, matmul)
    for (size_t i = 0; i < nodes.size(); ++i) {
      Node* n = nodes[i];
      if (n->op() != Op::MatMul) continue;
      Node* wn = n->operand(1)->op() == Op::Dequant ? n->operand(1)->operand(0) : n->operand(1);
      if (wn->op() != Op::Weight) continue;
      auto w = wn->str_attr("name");
      if (!w) continue;
      auto t = lora_names::parse_target(*w);
      if (t && wanted[(size_t)t->second]) targets.emplace_back(i, n);
    }
    if (targets.empty()) return false;

    // The shared inputs go first, with the graph's other inputs.
    Node* first = nodes.front();
    auto new_input = [&](Node* before, const std::string& name, TensorType t,
                         std::string loc) -> Result<Node*> {
      if (g.find_input(name))
        return make_error("the graph already has an input named \"{}\"", name);
      return g.insert_before(before, Op::Input, {}, std::move(t), {{"name", name}}, std::move(loc));
    };
    KILN_ASSIGN(Node* slots, new_input(first, "adapter_slots", TensorType{DType::I32, {kDynamic}}, ""));
    KILN_ASSIGN(Node* scale, new_input(first, "lora.scale", TensorType{DType::F32, {K}}, ""));

    for (auto [i, mm] : targets) {
      Node* x = mm->operand(0);
      Node* w = mm->operand(1)->op() == Op::Dequant ? mm->operand(1)->operand(0) : mm->operand(1);
      std::string wname(*w->str_attr("name"));
      int64_t out = w->type().shape[0], in = w->type().shape[1];
      KILN_ASSIGN(Node* a, new_input(mm, "lora." + wname + ".a", TensorType{DType::F32, {K, R, in}}, wname));
      KILN_ASSIGN(Node* b, new_input(mm, "lora." + wname + ".b", TensorType{DType::F32, {K, R, out}}, wname));
      KILN_ASSIGN(Node* rank, new_input(mm, "lora." + wname + ".rank", TensorType{DType::I32, {K}}, wname));
      std::vector<Node*> ops = {x, a, b, scale, slots, rank};
      auto t = infer_type(Op::Lora, ops, {});
      if (!t.ok()) return make_error("at {}: {}", wname, t.error().message);
      // lora and add go right after the matmul: before the node that followed it.
      Node* next = i + 1 < nodes.size() ? nodes[i + 1] : nullptr;
      std::string loc = mm->loc().empty() ? wname : mm->loc();
      auto place = [&](Op op, std::vector<Node*> operands, TensorType ty) {
        return next ? g.insert_before(next, op, std::move(operands), std::move(ty), {}, loc)
                    : g.add(op, std::move(operands), std::move(ty), {}, loc);
      };
      Node* lora = place(Op::Lora, ops, *t);
      Node* sum = place(Op::Add, {mm, lora}, mm->type());
      g.replace_all_uses(mm, sum);
      sum->set_operand(0, mm);  // the add itself keeps reading the matmul
    }
    g.set_attr("lora_slots", K);
    g.set_attr("lora_rank", R);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_lora_as_input_pass() { return std::make_unique<LoraAsInputPass>(); }

}  // namespace kiln
