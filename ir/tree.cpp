// ir/tree.cpp — see tree.h.
#include "ir/tree.h"

#include <fmt/format.h>

namespace kiln {

Result<TreeShape> tree_shape(const std::vector<int32_t>& parent) {
  int64_t n = (int64_t)parent.size();
  if (n < 1 || n > kMaxTreeNodes)
    return make_error("a tree has 1..{} nodes, got {}", kMaxTreeNodes, n);
  if (parent[0] != -1) return make_error("node 0 is the root: parent[0] must be -1, got {}", parent[0]);
  TreeShape t;
  t.parent = parent;
  t.depth.assign((size_t)n, 0);
  t.ancestors.assign((size_t)n, 1);
  for (int64_t j = 1; j < n; ++j) {
    int32_t p = parent[(size_t)j];
    if (p < 0 || p >= j)
      return make_error("parent[{}] = {} must name an earlier node (0..{})", j, p, j - 1);
    t.depth[(size_t)j] = t.depth[(size_t)p] + 1;
    t.ancestors[(size_t)j] = t.ancestors[(size_t)p] | (uint64_t{1} << j);
  }
  return t;
}

std::string tree_mask_text(const TreeShape& t) {
  std::string s;
  for (int64_t j = 0; j < t.size(); ++j) {
    if (j) s += '/';
    for (int64_t i = 0; i < t.size(); ++i) s += (t.ancestors[(size_t)j] >> i & 1) ? '1' : '0';
  }
  return s;
}

Result<TreeShape> node_tree(const Node* n) {
  const DenseData* p = n->dense_attr("tree_parent");
  auto mask = n->str_attr("tree_mask");
  if (!p) {
    if (n->has_attr("tree_parent")) return make_error("tree_parent must be dense<i32: ...>");
    if (mask) return make_error("tree_mask without tree_parent");
    return TreeShape{};
  }
  if (p->dtype != DType::I32) return make_error("tree_parent must be dense<i32: ...>");
  auto t = tree_shape(p->i32);
  if (!t.ok()) return make_error("tree_parent: {}", t.error().message);
  if (n->op() == Op::Attention) {
    std::string want = tree_mask_text(*t);
    if (!mask) return make_error("a tree attention needs tree_mask = \"{}\"", want);
    if (*mask != want)
      return make_error("tree_mask \"{}\" is not the ancestor mask of tree_parent (\"{}\")", *mask, want);
  } else if (mask) {
    return make_error("tree_mask belongs on attention only");
  }
  return t;
}

}  // namespace kiln
