// codegen/lora_table.cpp — see lora_table.h.
#include "codegen/lora_table.h"

#include <algorithm>

#include "frontend/lora_names.h"

namespace kiln {

Result<LoraTable> lora_table(const Graph& g) {
  LoraTable t;
  auto offset = [](const Node* n) -> Result<uint64_t> {
    auto off = n->int_attr("adapter_offset");
    if (!off)
      return make_error("codegen: adapter input \"{}\" has no adapter_offset (run plan-memory)",
                        n->str_attr("name").value_or("?"));
    return (uint64_t)*off;
  };
  for (const Node* l : g.nodes_of(Op::Lora)) {
    const Node* a = l->operand(1);
    const Node* b = l->operand(2);
    const Node* scale = l->operand(3);
    const Node* rank = l->operand(5);
    // lora.<weight>.a -> the base weight's name. A graph whose lora inputs are not named
    // after LLaMA projections (op tests) has no descriptor: the runtime cannot fill it.
    std::string_view an = a->str_attr("name").value_or("");
    std::optional<std::pair<int64_t, int>> which;
    if (an.size() > 7 && an.substr(0, 5) == "lora." && an.substr(an.size() - 2) == ".a")
      which = lora_names::parse_target(an.substr(5, an.size() - 7));
    if (!which) return LoraTable{};
    const auto& as = a->type().shape;  // [K, R, in]
    const auto& bs = b->type().shape;  // [K, R, out]
    kiln_lora_target e{};
    e.layer = (int32_t)which->first;
    e.module = which->second;
    e.in = as[2];
    e.out = bs[2];
    KILN_ASSIGN(e.a_offset, offset(a));
    KILN_ASSIGN(e.b_offset, offset(b));
    KILN_ASSIGN(e.rank_offset, offset(rank));
    e.a_slot_stride = (uint64_t)(as[1] * as[2]) * 4;
    e.b_slot_stride = (uint64_t)(bs[1] * bs[2]) * 4;
    KILN_ASSIGN(uint64_t so, offset(scale));
    if (t.targets.empty()) {
      t.slots = as[0];
      t.rank = as[1];
      t.scale_offset = so;
    } else if (t.slots != as[0] || t.rank != as[1] || t.scale_offset != so) {
      return make_error("codegen: lora nodes disagree on slots, rank or scale input (at {})", l->loc());
    }
    t.targets.push_back(e);
  }
  std::sort(t.targets.begin(), t.targets.end(), [](const kiln_lora_target& x, const kiln_lora_target& y) {
    return x.layer != y.layer ? x.layer < y.layer : x.module < y.module;
  });
  return t;
}

}  // namespace kiln
