// ir/text.h — the textual form of the graph IR: printer, parser and Graphviz export.
//
//   graph @smollm2 {
//     %0 = input {name = "tokens"} : i32[?]
//     %1 = weight {name = "token_embd.weight"} : q8_0[49152,576] loc("token_embd.weight")
//     %2 = embed(%1, %0) : f32[?,576] loc("token_embd")
//     ...
//   }
//
// Values are numbered in order. Attributes are integers, floats (always with '.' or an
// exponent), strings, or dense<f32: ...>/dense<i32: ...> data. Printing is deterministic
// and print(parse(print(g))) == print(g).
#pragma once

#include <string>
#include <string_view>

#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

std::string print_graph(const Graph& g);
// Parses one graph; errors read "FILE:LINE:COL: message".
Result<Graph> parse_graph(std::string_view text, std::string_view filename = "<input>");
std::string graph_to_dot(const Graph& g);
// A copy of `g` through its text (every node, attribute and graph attribute) sharing g's
// weight source: e.g. the DS2D verify and draft graphs made from the planned step graph.
Result<Graph> clone_graph(const Graph& g);

}  // namespace kiln
