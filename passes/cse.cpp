// passes/cse.cpp — common-subexpression elimination.
//
// Two nodes that apply the same op to the same operands with the same attributes and the
// same type compute the same value, so the later one is dropped and its users read the
// earlier one. One forward sweep in execution order, with a hash table keyed on
// (op, operand ids, attributes, type), makes the pass linear: operands are rewritten to
// their surviving representative before a node is hashed, so chains of duplicates
// collapse in the same sweep.
//
//   %2 = matmul(%0, %1)                    %2 = matmul(%0, %1)
//   %3 = matmul(%0, %1)        ->          %4 = add(%2, %2)
//   %4 = add(%2, %3)
//
// What is never merged:
//   - nodes with side effects (output, kv_write);
//   - `input` and `state` leaves (each is a distinct buffer bound by name);
//   - nodes that read a mutable buffer, i.e. have a `state` or `kv_write` operand: the
//     buffer may be written between the two reads, so equal operands do not mean equal
//     values.
// `weight` leaves with the same name and type are merged, and so are `constant` leaves
// whose data is bit-for-bit identical (so 0.0 and -0.0 stay apart). Locations are not
// part of the key; the survivor keeps its own.
#include <bit>
#include <cstring>
#include <unordered_map>

#include "passes/passes.h"

namespace kiln {
namespace {

size_t mix(size_t h, size_t v) { return h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2)); }

size_t hash_attr(const Attr& a) {
  size_t h = a.index();
  if (auto* i = std::get_if<int64_t>(&a)) return mix(h, std::hash<int64_t>{}(*i));
  if (auto* d = std::get_if<double>(&a)) return mix(h, std::bit_cast<uint64_t>(*d));
  if (auto* s = std::get_if<std::string>(&a)) return mix(h, std::hash<std::string>{}(*s));
  const auto& dd = std::get<DenseData>(a);
  h = mix(h, (size_t)dd.dtype);
  for (float f : dd.f32) h = mix(h, std::bit_cast<uint32_t>(f));
  for (int32_t i : dd.i32) h = mix(h, (uint32_t)i);
  return h;
}

// Attribute equality, bitwise for floats so that NaN equals itself and -0.0 != 0.0.
bool same_attr(const Attr& a, const Attr& b) {
  if (a.index() != b.index()) return false;
  if (auto* d = std::get_if<double>(&a))
    return std::bit_cast<uint64_t>(*d) == std::bit_cast<uint64_t>(std::get<double>(b));
  if (auto* x = std::get_if<DenseData>(&a)) {
    const auto& y = std::get<DenseData>(b);
    return x->dtype == y.dtype && x->i32 == y.i32 && x->f32.size() == y.f32.size() &&
           (x->f32.empty() ||
            std::memcmp(x->f32.data(), y.f32.data(), x->f32.size() * sizeof(float)) == 0);
  }
  return a == b;
}

size_t hash_node(const Node* n) {
  size_t h = mix(0, (size_t)n->op());
  for (const Node* o : n->operands()) h = mix(h, o->id());
  for (const auto& [k, v] : n->attrs()) h = mix(mix(h, std::hash<std::string>{}(k)), hash_attr(v));
  h = mix(h, (size_t)n->type().dtype);
  for (int64_t d : n->type().shape) h = mix(h, (size_t)d);
  return h;
}

bool same_node(const Node* a, const Node* b) {
  if (a->op() != b->op() || a->operands() != b->operands() || a->type() != b->type() ||
      a->attrs().size() != b->attrs().size())
    return false;
  for (auto ia = a->attrs().begin(), ib = b->attrs().begin(); ia != a->attrs().end(); ++ia, ++ib)
    if (ia->first != ib->first || !same_attr(ia->second, ib->second)) return false;
  return true;
}

bool mergeable(const Node* n) {
  if (op_info(n->op()).side_effects || n->op() == Op::Input || n->op() == Op::State)
    return false;
  for (const Node* o : n->operands())
    if (o->op() == Op::State || o->op() == Op::KvWrite) return false;
  return true;
}

class CsePass final : public Pass {
 public:
  std::string_view name() const override { return "cse"; }
  Result<bool> run(Graph& g) override {
    std::unordered_map<const Node*, Node*> repl;  // merged node -> survivor
    std::unordered_multimap<size_t, Node*> seen;  // hash -> earlier candidates
    for (Node* n : g.nodes()) {
      for (size_t i = 0; i < n->operands().size(); ++i) {
        auto r = repl.find(n->operand(i));
        if (r != repl.end()) n->set_operand(i, r->second);
      }
      if (!mergeable(n)) continue;
      size_t h = hash_node(n);
      Node* twin = nullptr;
      for (auto [it, end] = seen.equal_range(h); it != end && !twin; ++it)
        if (same_node(it->second, n)) twin = it->second;
      if (twin) repl[n] = twin;
      else seen.emplace(h, n);
    }
    if (repl.empty()) return false;
    g.erase_if([&](const Node* n) { return repl.count(n) != 0; });
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_cse_pass() { return std::make_unique<CsePass>(); }

}  // namespace kiln
