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
// candidate at any node (see ds2d_template). "deep": with int8 packed matmuls on a
// 2-core x86 host a verify pass costs ~1.1 decode steps at 4 nodes and ~1.8 at 8, so the
// budget goes to depth, where n-gram drafts of grounded replies are right (bench/
// run_ds2d_bench.sh: 1.52x vs 1.40x for "tree" on grounded prompts, the same on chat).
inline constexpr std::string_view kDefaultDs2dTopology = "deep";

// The parent array of an `nodes`-node template. topology:
//   "chain"         a single path: parent[j] = j - 1
//   "tree"          = "0.5,0.2,0.1,0.05,0.03" (wide near the root)
//   "deep"          = "0.8,0.15,0.05" (a long chain, branches further down)
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
