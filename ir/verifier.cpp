// ir/verifier.cpp — see verifier.h.
#include "ir/verifier.h"

#include <cstdint>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ir/tree.h"

namespace kiln {
namespace {

// The graph attributes the passes and codegen read, each with the kind it must have (and,
// for the limits that size the memory plan, its range). A pass reads a missing option as
// its default, so an option of the wrong kind ("2" for 2) must be an error here rather
// than a default quietly used; values in range are the passes' to check.
enum class AttrKind { Int, String, DenseI32 };
struct GraphAttrSpec {
  std::string_view name;
  AttrKind kind;
  int64_t lo = INT64_MIN, hi = INT64_MAX;  // for Int
};
constexpr int64_t kMaxBytes = int64_t{1} << 50;
constexpr GraphAttrSpec kGraphAttrs[] = {
    // compile limits
    {"max_rows", AttrKind::Int, 1, 1 << 20},
    {"max_threads", AttrKind::Int, 1, 1024},
    // pass options
    {"int8_activations", AttrKind::Int, 0, 1},
    {"pack_weights", AttrKind::Int},
    {"quantize", AttrKind::String},
    {"group_size", AttrKind::Int},
    {"quantize_head", AttrKind::String},
    {"lora_slots", AttrKind::Int},
    {"lora_rank", AttrKind::Int},
    {"lora_targets", AttrKind::String},
    {"ds2d_nodes", AttrKind::Int},
    {"ds2d_topology", AttrKind::String},
    {"ds2d_parent", AttrKind::DenseI32},
    // results passes record
    {"weights_bytes", AttrKind::Int, 0, kMaxBytes},
    {"arena_bytes", AttrKind::Int, 0, kMaxBytes},
    {"kv_bytes", AttrKind::Int, 0, kMaxBytes},
    {"kv_stream_bytes", AttrKind::Int, 0, kMaxBytes},
    {"adapter_bytes", AttrKind::Int, 0, kMaxBytes},
};

std::string_view kind_name(AttrKind k) {
  switch (k) {
    case AttrKind::Int: return "an integer";
    case AttrKind::String: return "a string";
    case AttrKind::DenseI32: return "dense<i32: ...>";
  }
  return "?";
}

void check_graph_attrs(const Graph& g, std::vector<std::string>& problems) {
  for (const GraphAttrSpec& spec : kGraphAttrs) {
    auto it = g.attrs().find(spec.name);
    if (it == g.attrs().end()) continue;
    const Attr& a = it->second;
    bool ok = false;
    switch (spec.kind) {
      case AttrKind::Int: ok = std::holds_alternative<int64_t>(a); break;
      case AttrKind::String: ok = std::holds_alternative<std::string>(a); break;
      case AttrKind::DenseI32: ok = std::holds_alternative<DenseData>(a) && std::get<DenseData>(a).dtype == DType::I32; break;
    }
    if (!ok) {
      problems.push_back(fmt::format("graph attribute {} must be {}", spec.name, kind_name(spec.kind)));
    } else if (spec.kind == AttrKind::Int) {
      const int64_t v = std::get<int64_t>(a);
      if (v < spec.lo || v > spec.hi)
        problems.push_back(fmt::format("graph attribute {} = {} is outside {}..{}", spec.name, v, spec.lo, spec.hi));
    }
  }
}

}  // namespace

Status verify(const Graph& g) {
  std::vector<std::string> problems;
  check_graph_attrs(g, problems);
  auto report = [&](const Node* n, size_t index, const std::string& msg) {
    problems.push_back(fmt::format("%{} = {}{}{}: {}", index, op_name(n->op()),
                                   n->loc().empty() ? "" : " at \"" + n->loc() + "\"",
                                   n->src().empty() ? "" : " (" + n->src() + ")", msg));
  };
  std::unordered_map<const Node*, size_t> index;
  std::optional<std::vector<int32_t>> first_tree;  // tree_parent of the first kv_write/attention
  std::set<std::string, std::less<>> inputs, outputs;
  size_t i = 0;
  for (const Node* n : g.nodes()) {
    for (size_t k = 0; k < n->operands().size(); ++k) {
      const Node* o = n->operand(k);
      if (!o || !index.count(o)) report(n, i, fmt::format("operand {} is not defined before it", k));
      else if (o->op() == Op::Output) report(n, i, fmt::format("operand {} is an output, which has no value", k));
    }
    // Only the leading (row) dimension may vary from step to step.
    for (size_t d = 1; d < n->type().shape.size(); ++d)
      if (n->type().shape[d] == kDynamic) {
        report(n, i, fmt::format("dimension {} of {} is dynamic; only the first (rows) may be", d, n->type().str()));
        break;
      }
    switch (n->op()) {
      case Op::Input:
      case Op::State:
      case Op::Weight: {
        auto name = n->str_attr("name");
        if (!name) {
          report(n, i, "missing string attribute 'name'");
          break;
        }
        if (n->op() != Op::Weight && !inputs.insert(std::string(*name)).second)
          report(n, i, fmt::format("input name \"{}\" is used twice", *name));
        if (n->op() == Op::Weight && g.weights()) {
          auto w = g.weights()->find(*name);
          if (!w) {
            report(n, i, fmt::format("weight \"{}\" is not in {}", *name, g.weights()->describe()));
          } else if (w->dtype != n->type().dtype || w->shape != n->type().shape) {
            TensorType actual{w->dtype, w->shape};
            report(n, i, fmt::format("weight \"{}\" is {} in {}, but the node declares {}", *name,
                                     actual.str(), g.weights()->describe(), n->type().str()));
          }
        }
        if (n->op() != Op::Input && !n->type().is_static())
          report(n, i, fmt::format("{} must have a static shape", op_name(n->op())));
        if (const DTypeInfo& d = dtype_info(n->type().dtype);
            d.block_elems > 1 && !n->type().shape.empty() && n->type().shape.back() % d.block_elems != 0)
          report(n, i, fmt::format("rows of {} must be whole blocks of {} elements", n->type().str(), d.block_elems));
        break;
      }
      case Op::Constant: {
        const DenseData* d = n->dense_attr("value");
        if (!d) {
          report(n, i, "missing dense attribute 'value'");
          break;
        }
        if (!n->type().is_static()) {
          report(n, i, "constant must have a static shape");
          break;
        }
        size_t count = d->dtype == DType::I32 ? d->i32.size() : d->f32.size();
        if (d->dtype != n->type().dtype || (int64_t)count != n->type().elements())
          report(n, i, fmt::format("value holds {} {} elements but the type is {}", count,
                                   dtype_name(d->dtype), n->type().str()));
        break;
      }
      case Op::Output: {
        auto name = n->str_attr("name");
        if (name && !outputs.insert(std::string(*name)).second)
          report(n, i, fmt::format("output name \"{}\" is used twice", *name));
        [[fallthrough]];
      }
      case Op::Embed:
      case Op::RmsNorm:
      case Op::MatMul:
      case Op::Dequant:
      case Op::MatMulSwiGlu:
      case Op::RmsMatMul:
      case Op::Lora:
      case Op::Add:
      case Op::Mul:
      case Op::Silu:
      case Op::Rope:
      case Op::LastRow:
      case Op::GatherRows:
      case Op::KvWrite:
      case Op::Attention: {
        bool operands_ok = true;
        for (const Node* o : n->operands()) operands_ok &= o && index.count(o);
        if (!operands_ok) break;
        auto t = infer_type(n->op(), n->operands(), n->attrs());
        if (!t.ok()) report(n, i, t.error().message);
        else if (*t != n->type())
          report(n, i, fmt::format("declared type {} but the operands give {}", n->type().str(),
                                   t->str()));
        if (n->op() == Op::KvWrite || n->op() == Op::Attention) {
          auto tree = node_tree(n);
          if (!tree.ok()) {
            report(n, i, tree.error().message);
          } else if (!first_tree) {  // the first sets the graph's tree (or its absence)
            first_tree = tree->parent;
          } else if (tree->parent != *first_tree) {
            // one step writes and reads the same rows: a tree attention over rows a plain
            // (or other) kv_write put elsewhere reads the wrong cache
            report(n, i, fmt::format("its tree_parent [{}] differs from the graph's first kv_write/attention's [{}]: "
                                     "every kv_write and attention of a step must carry the same tree",
                                     fmt::join(tree->parent, " "), fmt::join(*first_tree, " ")));
          }
        }
        break;
      }
    }
    index[n] = i++;
  }
  // Once unrolled, the graph's ds2d_parent (before, ds2d-unroll's request; after, what it
  // unrolled) must be the nodes' tree.
  if (first_tree && !first_tree->empty()) {
    auto it = g.attrs().find("ds2d_parent");
    const DenseData* d = it == g.attrs().end() ? nullptr : std::get_if<DenseData>(&it->second);
    if (d && d->dtype == DType::I32 && d->i32 != *first_tree)
      problems.push_back(fmt::format("graph attribute ds2d_parent [{}] differs from the tree_parent of its "
                                     "kv_write and attention nodes [{}]", fmt::join(d->i32, " "),
                                     fmt::join(*first_tree, " ")));
  }
  if (problems.empty()) return Status::success();
  std::string msg = fmt::format("graph @{} failed verification ({} problem{}):", g.name(),
                                problems.size(), problems.size() == 1 ? "" : "s");
  for (auto& p : problems) msg += "\n  " + p;
  return Error{msg};
}

}  // namespace kiln
