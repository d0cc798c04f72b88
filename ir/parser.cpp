// ir/parser.cpp — text -> Graph. A small hand-written lexer and recursive descent parser.
//
// The parser checks syntax and name binding only; types are checked by verify(), which
// callers run after parsing (kiln's tools always do), so one set of rules serves both.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <unordered_map>

#include <fmt/format.h>

#include "ir/text.h"

namespace kiln {
namespace {

class Parser {
 public:
  Parser(std::string_view text, std::string_view file) : s_(text), file_(file) {}

  Result<Graph> parse() {
    skip();
    KILN_TRY(expect_word("graph"));
    KILN_TRY(expect('@'));
    skip();
    std::string name;
    if (peek() == '"') {
      KILN_ASSIGN(name, string_lit());
    } else {
      KILN_ASSIGN(name, ident("a graph name"));
    }
    Graph g(name);
    skip();
    if (s_.substr(p_, 10) == "attributes") {
      p_ += 10;
      KILN_ASSIGN(auto attrs, attr_dict());
      for (auto& [k, v] : attrs) g.set_attr(k, v);
    }
    KILN_TRY(expect('{'));
    while (true) {
      skip();
      if (peek() == '}') { ++p_; break; }
      if (at_end()) return err("expected '}' at the end of the graph");
      KILN_TRY(parse_node(g));
    }
    skip();
    if (!at_end()) return err("unexpected text after the graph");
    return g;
  }

 private:
  std::string_view s_;
  std::string_view file_;
  size_t p_ = 0;
  std::unordered_map<std::string, Node*> values_;

  bool at_end() const { return p_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[p_]; }

  // The line of offset `at`, counting on from the last call (nodes come in order).
  size_t line_at(size_t at) {
    for (; line_pos_ < at && line_pos_ < s_.size(); ++line_pos_) line_ += s_[line_pos_] == '\n';
    return line_;
  }
  size_t line_ = 1, line_pos_ = 0;

  Error err(std::string_view msg) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') { ++line; col = 1; } else ++col;
    }
    return make_error("{}:{}:{}: {}", file_, line, col, msg);
  }

  // Skips spaces and `//` comments.
  void skip() {
    while (!at_end()) {
      if (std::isspace((unsigned char)s_[p_])) ++p_;
      else if (s_.substr(p_, 2) == "//") {
        while (!at_end() && s_[p_] != '\n') ++p_;
      } else break;
    }
  }

  Status expect(char c) {
    skip();
    if (peek() != c) return err(fmt::format("expected '{}'", c));
    ++p_;
    return Status::success();
  }

  bool accept(char c) {
    skip();
    if (peek() == c) { ++p_; return true; }
    return false;
  }

  static bool ident_char(char c) {
    return std::isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
  }

  Result<std::string> ident(std::string_view what) {
    skip();
    size_t b = p_;
    while (!at_end() && ident_char(s_[p_])) ++p_;
    if (b == p_) return err(fmt::format("expected {}", what));
    return std::string(s_.substr(b, p_ - b));
  }

  Status expect_word(std::string_view w) {
    size_t save = p_;
    auto id = ident(fmt::format("'{}'", w));
    if (!id.ok() || *id != w) {
      p_ = save;
      return err(fmt::format("expected '{}'", w));
    }
    return Status::success();
  }

  Result<std::string> string_lit() {
    skip();
    if (peek() != '"') return err("expected a string");
    ++p_;
    std::string out;
    while (true) {
      if (at_end()) return err("unterminated string");
      char c = s_[p_++];
      if (c == '"') break;
      if (c != '\\') { out += c; continue; }
      if (at_end()) return err("unterminated string");
      char e = s_[p_++];
      if (e == 'n') out += '\n';
      else if (e == '"' || e == '\\') out += e;
      else if (e == 'x' && p_ + 2 <= s_.size() && std::isxdigit((unsigned char)s_[p_]) &&
               std::isxdigit((unsigned char)s_[p_ + 1])) {
        out += (char)std::strtol(std::string(s_.substr(p_, 2)).c_str(), nullptr, 16);
        p_ += 2;
      } else return err("bad escape in string");
    }
    return out;
  }

  // A number token: returns the text and whether it is a float.
  Result<std::pair<std::string, bool>> number() {
    skip();
    size_t b = p_;
    if (peek() == '-' || peek() == '+') ++p_;
    if (s_.substr(p_, 3) == "inf" || s_.substr(p_, 3) == "nan") {
      p_ += 3;
      return std::make_pair(std::string(s_.substr(b, p_ - b)), true);
    }
    bool is_float = false;
    while (!at_end() && (std::isdigit((unsigned char)s_[p_]) || s_[p_] == '.' || s_[p_] == 'e' ||
                         s_[p_] == 'E' ||
                         ((s_[p_] == '-' || s_[p_] == '+') && (s_[p_ - 1] == 'e' || s_[p_ - 1] == 'E')))) {
      if (!std::isdigit((unsigned char)s_[p_])) is_float = true;
      ++p_;
    }
    std::string t(s_.substr(b, p_ - b));
    if (t.empty() || t == "-" || t == "+") { p_ = b; return err("expected a number"); }
    return std::make_pair(t, is_float);
  }

  Result<double> parse_double(const std::string& t) {
    char* end = nullptr;
    double v = std::strtod(t.c_str(), &end);
    if (*end) return err(fmt::format("bad number '{}'", t));
    return v;
  }

  Result<Attr> attr_value() {
    skip();
    if (peek() == '"') {
      KILN_ASSIGN(std::string s, string_lit());
      return Attr{s};
    }
    if (s_.substr(p_, 6) == "dense<") {
      p_ += 6;
      KILN_ASSIGN(std::string dt, ident("a dtype"));
      KILN_TRY(expect(':'));
      DenseData d;
      if (dt == "f32") d.dtype = DType::F32;
      else if (dt == "i32") d.dtype = DType::I32;
      else return err(fmt::format("dense data must be f32 or i32, not '{}'", dt));
      while (!accept('>')) {
        if (at_end()) return err("unterminated dense<...>");
        KILN_ASSIGN(auto num, number());
        if (d.dtype == DType::I32) {
          if (num.second) return err("i32 dense data needs integers");
          errno = 0;
          long long v = std::strtoll(num.first.c_str(), nullptr, 10);
          if (errno == ERANGE || v < INT32_MIN || v > INT32_MAX)
            return err(fmt::format("i32 value {} out of range", num.first));
          d.i32.push_back((int32_t)v);
        } else {
          KILN_ASSIGN(double v, parse_double(num.first));  // the whole token is the number
          // inf and nan as the printer writes them; a number past float range is an error
          const bool digits = num.first.find_first_of("0123456789") != std::string::npos;
          if (digits && (std::isnan(v) || std::isinf((float)v)))  // rounds past float range
            return err(fmt::format("f32 value {} out of range", num.first));
          d.f32.push_back((float)v);
        }
      }
      return Attr{d};
    }
    KILN_ASSIGN(auto num, number());
    if (num.second) {
      KILN_ASSIGN(double v, parse_double(num.first));
      return Attr{v};
    }
    errno = 0;
    long long v = std::strtoll(num.first.c_str(), nullptr, 10);
    if (errno == ERANGE) return err(fmt::format("integer '{}' out of range", num.first));
    return Attr{(int64_t)v};
  }

  // {key = value, ...}
  Result<std::map<std::string, Attr, std::less<>>> attr_dict() {
    std::map<std::string, Attr, std::less<>> attrs;
    KILN_TRY(expect('{'));
    if (accept('}')) return attrs;
    do {
      KILN_ASSIGN(std::string key, ident("an attribute name"));
      KILN_TRY(expect('='));
      KILN_ASSIGN(Attr v, attr_value());
      if (attrs.count(key)) return err(fmt::format("attribute '{}' given twice", key));
      attrs[key] = std::move(v);
    } while (accept(','));
    KILN_TRY(expect('}'));
    return attrs;
  }

  Result<TensorType> type() {
    KILN_ASSIGN(std::string dt, ident("a dtype"));
    auto d = dtype_from_name(dt);
    if (!d) return err(fmt::format("unknown dtype '{}'", dt));
    TensorType t{*d, {}};
    KILN_TRY(expect('['));
    if (accept(']')) return t;
    int64_t elements = 1;
    do {
      skip();
      if (accept('?')) { t.shape.push_back(kDynamic); continue; }
      KILN_ASSIGN(auto num, number());
      if (num.second) return err("dimensions are integers");
      errno = 0;
      long long v = std::strtoll(num.first.c_str(), nullptr, 10);
      if (errno == ERANGE || v < 0 || v > (1ll << 40))
        return err(fmt::format("dimension {} out of range (0..2^40)", num.first));
      if (v && elements > (int64_t{1} << 48) / v)
        return err(fmt::format("{}[...] has more than 2^48 elements", dt));
      elements *= std::max<int64_t>(v, 1);
      t.shape.push_back(v);
    } while (accept(','));
    KILN_TRY(expect(']'));
    return t;
  }

  Result<std::string> value_name() {
    KILN_TRY(expect('%'));
    return ident("a value name");
  }

  Status parse_node(Graph& g) {
    skip();
    const size_t start = p_;
    KILN_ASSIGN(std::string result, value_name());
    if (values_.count(result)) return err(fmt::format("value %{} is defined twice", result));
    KILN_TRY(expect('='));
    KILN_ASSIGN(std::string opname, ident("an op name"));
    auto op = op_from_name(opname);
    if (!op) return err(fmt::format("unknown op '{}'", opname));
    std::vector<Node*> operands;
    if (accept('(')) {
      if (!accept(')')) {
        do {
          KILN_ASSIGN(std::string v, value_name());
          auto it = values_.find(v);
          if (it == values_.end()) return err(fmt::format("use of undefined value %{}", v));
          operands.push_back(it->second);
        } while (accept(','));
        KILN_TRY(expect(')'));
      }
    }
    std::map<std::string, Attr, std::less<>> attrs;
    skip();
    if (peek() == '{') {
      KILN_ASSIGN(attrs, attr_dict());
    }
    KILN_TRY(expect(':'));
    KILN_ASSIGN(TensorType t, type());
    std::string loc;
    skip();
    if (s_.substr(p_, 4) == "loc(") {
      p_ += 4;
      KILN_ASSIGN(loc, string_lit());
      KILN_TRY(expect(')'));
    }
    const OpInfo& info = op_info(*op);
    if ((int)operands.size() < info.min_operands || (int)operands.size() > info.max_operands)
      return err(fmt::format("'{}' takes {} operands, got {}", opname,
                             info.min_operands == info.max_operands
                                 ? std::to_string(info.min_operands)
                                 : fmt::format("{} to {}", info.min_operands, info.max_operands),
                             operands.size()));
    values_[result] = g.add(*op, std::move(operands), std::move(t), std::move(attrs), std::move(loc));
    if (file_.rfind("<clone", 0) != 0) values_[result]->set_src(fmt::format("{}:{} %{}", file_, line_at(start), result));
    return Status::success();
  }
};

}  // namespace

Result<Graph> parse_graph(std::string_view text, std::string_view filename) {
  return Parser(text, filename).parse();
}

}  // namespace kiln

namespace kiln {

Result<Graph> clone_graph(const Graph& g) {
  KILN_ASSIGN(Graph c, parse_graph(print_graph(g), "<clone of @" + g.name() + ">"));
  c.set_weights(g.weights());
  return c;
}

}  // namespace kiln
