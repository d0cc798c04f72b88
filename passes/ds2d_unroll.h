// passes/ds2d_unroll.h — DS2D tree templates (the shapes the ds2d-unroll pass unrolls).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "support/result.h"

namespace kiln {

// Default node budgets of the verify templates (kiln compile --ds2d-templates).
inline constexpr std::string_view kDefaultDs2dTemplates = "4,8,16,32";
// Default topology: nodes picked by the acceptance rate assumed for a draft's k-th best
// candidate at any node (see ds2d_template).
inline constexpr std::string_view kDefaultDs2dTopology = "tree";

// The parent array of an `nodes`-node template. topology:
//   "chain"         a single path: parent[j] = j - 1
//   "tree"          = "0.5,0.2,0.1,0.05,0.03"
//   "p0,p1,..."     p_k is the chance that a node's k-th ranked child is accepted (non-
//                   increasing, in (0,1)); a node's weight is the product of p along its
//                   path and the template is the `nodes` heaviest nodes — a tree that
//                   maximises the expected accepted length under that model (as in
//                   Sequoia/EAGLE-2). With falling p this is a long chain from the root
//                   with branches near the root.
// Nodes are numbered by falling weight, so parent[j] < j and every prefix is a tree.
Result<std::vector<int32_t>> ds2d_template(int64_t nodes, std::string_view topology);
// Parses "4,8,16,32" into ascending, distinct budgets in 1..64.
Result<std::vector<int64_t>> ds2d_budgets(std::string_view text);

}  // namespace kiln
