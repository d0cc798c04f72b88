// ir/printer.cpp — Graph -> text and Graph -> Graphviz dot.
#include <cctype>
#include <cmath>
#include <unordered_map>

#include <fmt/format.h>

#include "ir/text.h"

namespace kiln {
namespace {

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { out += '\\'; out += (char)c; }
    else if (c == '\n') out += "\\n";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += (char)c;
  }
  return out + "\"";
}

// Floats always print with '.' or an exponent, so they never parse back as integers.
template <typename F>
std::string float_text(F v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string attr_text(const Attr& a) {
  if (auto* i = std::get_if<int64_t>(&a)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&a)) return float_text(*d);
  if (auto* s = std::get_if<std::string>(&a)) return quote(*s);
  const auto& dd = std::get<DenseData>(a);
  std::string out = fmt::format("dense<{}:", dtype_name(dd.dtype));
  if (dd.dtype == DType::I32)
    for (auto v : dd.i32) out += fmt::format(" {}", v);
  else
    for (auto v : dd.f32) out += " " + float_text(v);
  return out + ">";
}

}  // namespace

std::string print_graph(const Graph& g) {
  // Names that are not plain identifiers print quoted, so they parse back.
  bool plain = !g.name().empty();
  for (char c : g.name())
    plain &= std::isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
  std::string out = fmt::format("graph @{}", plain ? g.name() : quote(g.name()));
  if (!g.attrs().empty()) {
    out += " attributes {";
    bool first = true;
    for (auto& [k, v] : g.attrs()) {
      out += (first ? "" : ", ") + k + " = " + attr_text(v);
      first = false;
    }
    out += "}";
  }
  out += " {\n";
  std::unordered_map<const Node*, size_t> num;
  for (const Node* n : g.nodes()) {
    size_t id = num.size();
    num[n] = id;
    out += fmt::format("  %{} = {}", id, op_name(n->op()));
    if (!n->operands().empty()) {
      out += "(";
      for (size_t k = 0; k < n->operands().size(); ++k) {
        auto it = num.find(n->operand(k));
        out += (k ? ", %" : "%") + (it == num.end() ? std::string("<undefined>")
                                                      : std::to_string(it->second));
      }
      out += ")";
    }
    if (!n->attrs().empty()) {
      out += " {";
      bool first = true;
      for (auto& [k, v] : n->attrs()) {
        out += (first ? "" : ", ") + k + " = " + attr_text(v);
        first = false;
      }
      out += "}";
    }
    out += " : " + n->type().str();
    if (!n->loc().empty()) out += " loc(" + quote(n->loc()) + ")";
    out += "\n";
  }
  return out + "}\n";
}

// Text inside a DOT string: quotes and backslashes escaped (a label's "\n" line breaks
// are added after).
static std::string dot_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string graph_to_dot(const Graph& g) {
  std::string out = fmt::format("digraph \"{}\" {{\n  node [shape=box, fontname=\"monospace\"];\n",
                                dot_escape(g.name()));
  std::unordered_map<const Node*, size_t> num;
  for (const Node* n : g.nodes()) {
    size_t id = num.size();
    num[n] = id;
    std::string label = fmt::format("%{} {}", id, op_name(n->op()));
    if (auto name = n->str_attr("name")) label += " " + dot_escape(*name);
    label += "\\n" + n->type().str();
    if (!n->loc().empty() && !n->str_attr("name")) label += "\\n" + dot_escape(n->loc());
    std::string style;
    switch (n->op()) {
      case Op::Weight: case Op::Constant: style = ", style=filled, fillcolor=\"#e8e8e8\""; break;
      case Op::Input: case Op::State: style = ", style=filled, fillcolor=\"#cfe8ff\""; break;
      case Op::Output: style = ", style=filled, fillcolor=\"#d8f5d0\""; break;
      default: break;
    }
    out += fmt::format("  n{} [label=\"{}\"{}];\n", id, label, style);
    for (const Node* o : n->operands())
      if (num.count(o)) out += fmt::format("  n{} -> n{};\n", num[o], id);
  }
  return out + "}\n";
}

}  // namespace kiln
