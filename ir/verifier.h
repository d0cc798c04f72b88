// ir/verifier.h — structural and type checks of a graph, reported as diagnostics.
#pragma once

#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

// Checks that operands come earlier in the graph, leaves carry their attributes, names
// are unique, every node's declared type equals the inferred one, and (when the graph has
// a weight source) every weight exists there with the declared dtype and shape.
// All problems are reported in one Error, one line each, naming node, op and location.
Status verify(const Graph& g);

}  // namespace kiln
