// ir/tree.h — token trees for DS2D tree verification (attention and kv_write over a tree).
//
// A tree template of N nodes is a parent array: parent[0] = -1 (node 0 is the root, the
// last accepted token), parent[j] < j. In a tree step the rows come in blocks of N per
// stream; row t is node j = t % N of its block. With `base` = the tokens already in the
// stream's cache, node j sits at position base + depth[j] (the step's positions input)
// and its K/V go to cache row base + j = position - depth[j] + j, so the KV row needs no
// new input. Node j attends to cache rows [0, base) and to base + i for every
// ancestor-or-self i of j. Along any root-to-node path this is exactly the causal
// attention of that path run as a plain sequence (the equivalence DS2D relies on).
//
// In the IR the template is the attribute tree_parent = dense<i32: ...> of kv_write and
// attention; attention also carries the mask it implies as text, one row per node, '1'
// where node j (row) sees node i (column):
//
//   tree_parent = dense<i32: -1 0 0 1>      tree_mask = "1000/1100/1010/1101"
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

// Templates are limited to 64 nodes: ancestor sets are 64-bit masks in the kernels.
inline constexpr int64_t kMaxTreeNodes = 64;

struct TreeShape {
  std::vector<int32_t> parent, depth;
  std::vector<uint64_t> ancestors;  // bit i of ancestors[j]: i is j or an ancestor of j
  int64_t size() const { return (int64_t)parent.size(); }
};

// Checks a parent array and derives depths and ancestor masks.
Result<TreeShape> tree_shape(const std::vector<int32_t>& parent);
// The mask text of a tree ("1000/1100/..."), as printed in tree_mask.
std::string tree_mask_text(const TreeShape& t);
// The tree of a kv_write or attention node (tree_parent), or an empty shape for an
// ordinary causal node; errors when the attributes are malformed or disagree.
Result<TreeShape> node_tree(const Node* n);

}  // namespace kiln
