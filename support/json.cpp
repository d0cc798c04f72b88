// support/json.cpp — the JSON reader of support/json.h.
//
// Iterative over nesting (an explicit stack of open containers), so the depth limit is
// the only bound on memory besides the input size.
#include "support/json.h"

#include <cmath>
#include <cstdlib>

namespace kiln {

class JsonParser {
 public:
  JsonParser(std::string_view t, int max_depth) : t_(t), max_depth_(max_depth) {}

  Result<Json> run() {
    // Each open container and, for objects, the key of the member being read.
    struct Open { Json value; std::string key; };
    std::vector<Open> stack;
    for (;;) {
      // Read one value (scalars whole; containers opened).
      ws();
      if (at_end()) return err("unexpected end of input");
      Json v;
      bool opened = false;
      char c = t_[i_];
      if (c == '{' || c == '[') {
        if ((int)stack.size() >= max_depth_) return err(fmt::format("nested deeper than {} levels", max_depth_));
        ++i_;
        Open o;
        o.value.kind_ = c == '{' ? Json::Kind::Object : Json::Kind::Array;
        ws();
        char close = c == '{' ? '}' : ']';
        if (!at_end() && t_[i_] == close) {
          ++i_;
          v = std::move(o.value);
        } else {
          if (c == '{') KILN_TRY(key(o.key));
          stack.push_back(std::move(o));
          opened = true;
        }
      } else {
        KILN_TRY(scalar(v));
      }
      if (opened) continue;
      // Attach v to its parent; close every container that ends here.
      for (;;) {
        if (stack.empty()) {
          ws();
          if (!at_end()) return err("unexpected text after the JSON value");
          return v;
        }
        Open& top = stack.back();
        if (top.value.kind_ == Json::Kind::Object)
          top.value.members_.emplace_back(std::move(top.key), std::move(v));
        else
          top.value.items_.push_back(std::move(v));
        ws();
        if (at_end()) return err("unexpected end of input");
        char close = top.value.kind_ == Json::Kind::Object ? '}' : ']';
        if (t_[i_] == ',') {
          ++i_;
          if (top.value.kind_ == Json::Kind::Object) KILN_TRY(key(top.key));
          break;  // read the next member
        }
        if (t_[i_] != close) return err(fmt::format("expected ',' or '{}'", close));
        ++i_;
        v = std::move(top.value);  // the container is complete: attach it to its parent
        stack.pop_back();
      }
    }
  }

 private:
  bool at_end() const { return i_ >= t_.size(); }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
  }
  Error err(std::string_view what) const { return make_error("JSON: {} at byte {}", what, i_); }

  // `"key" :` of an object member.
  Status key(std::string& out) {
    ws();
    if (at_end() || t_[i_] != '"') return err("expected a string key");
    KILN_TRY(string(out));
    ws();
    if (at_end() || t_[i_] != ':') return err("expected ':'");
    ++i_;
    return {};
  }

  bool literal(std::string_view w) {
    if (t_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }

  Status scalar(Json& v) {
    char c = t_[i_];
    if (c == '"') {
      v.kind_ = Json::Kind::String;
      return string(v.str_);
    }
    if (literal("true")) { v.kind_ = Json::Kind::Bool; v.bool_ = true; return {}; }
    if (literal("false")) { v.kind_ = Json::Kind::Bool; v.bool_ = false; return {}; }
    if (literal("null")) { v.kind_ = Json::Kind::Null; return {}; }
    if (c == '-' || (c >= '0' && c <= '9')) return number(v);
    return err(fmt::format("unexpected character '{}'", c));
  }

  Status number(Json& v) {
    size_t start = i_;
    bool neg = false;
    if (t_[i_] == '-') neg = true, ++i_;
    auto digits = [&] {
      size_t s = i_;
      while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
      return i_ - s;
    };
    size_t int_start = i_;
    size_t nd = digits();
    if (nd == 0) return err("a number needs digits");
    if (nd > 1 && t_[int_start] == '0') return err("a number may not start with 0");
    bool integral = true;
    if (i_ < t_.size() && t_[i_] == '.') {
      ++i_;
      integral = false;
      if (digits() == 0) return err("a number needs digits after '.'");
    }
    if (i_ < t_.size() && (t_[i_] == 'e' || t_[i_] == 'E')) {
      ++i_;
      integral = false;
      if (i_ < t_.size() && (t_[i_] == '+' || t_[i_] == '-')) ++i_;
      if (digits() == 0) return err("a number needs digits in its exponent");
    }
    std::string text(t_.substr(start, i_ - start));
    v.kind_ = Json::Kind::Number;
    v.num_ = std::strtod(text.c_str(), nullptr);
    v.neg_ = neg;
    if (integral && nd <= 20) {
      uint64_t m = 0;
      bool fits = true;
      for (size_t k = int_start; k < int_start + nd; ++k) {
        uint64_t d = (uint64_t)(t_[k] - '0');
        if (m > (UINT64_MAX - d) / 10) { fits = false; break; }
        m = m * 10 + d;
      }
      if (fits) v.has_int_ = true, v.mag_ = m;
    }
    return {};
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += (char)cp;
    } else if (cp < 0x800) {
      out += (char)(0xC0 | (cp >> 6));
      out += (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += (char)(0xE0 | (cp >> 12));
      out += (char)(0x80 | ((cp >> 6) & 0x3F));
      out += (char)(0x80 | (cp & 0x3F));
    } else {
      out += (char)(0xF0 | (cp >> 18));
      out += (char)(0x80 | ((cp >> 12) & 0x3F));
      out += (char)(0x80 | ((cp >> 6) & 0x3F));
      out += (char)(0x80 | (cp & 0x3F));
    }
  }

  Result<uint32_t> hex4() {
    if (t_.size() - i_ < 4) return err("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char h = t_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
      else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
      else return err("bad hex digit in \\u escape");
    }
    return v;
  }

  Status string(std::string& out) {
    ++i_;  // opening quote
    out.clear();
    for (;;) {
      if (at_end()) return err("unterminated string");
      unsigned char c = (unsigned char)t_[i_++];
      if (c == '"') return {};
      if (c < 0x20) return err("control character in a string");
      if (c != '\\') {
        out += (char)c;
        continue;
      }
      if (at_end()) return err("unterminated escape");
      char e = t_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          KILN_ASSIGN(uint32_t cp, hex4());
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            if (t_.substr(i_, 2) != "\\u") return err("unpaired surrogate in \\u escape");
            i_ += 2;
            KILN_ASSIGN(uint32_t lo, hex4());
            if (lo < 0xDC00 || lo >= 0xE000) return err("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return err("unpaired surrogate in \\u escape");
          }
          put_utf8(out, cp);
          break;
        }
        default: return err(fmt::format("bad escape '\\{}'", e));
      }
    }
  }

  std::string_view t_;
  int max_depth_;
  size_t i_ = 0;
};

Result<Json> Json::parse(std::string_view text, int max_depth) { return JsonParser(text, max_depth).run(); }

std::optional<bool> Json::as_bool() const {
  if (kind_ != Kind::Bool) return std::nullopt;
  return bool_;
}

std::optional<double> Json::as_number() const {
  if (kind_ != Kind::Number) return std::nullopt;
  return num_;
}

std::optional<int64_t> Json::as_int() const {
  if (kind_ != Kind::Number) return std::nullopt;
  if (has_int_) {
    if (!neg_ && mag_ <= (uint64_t)INT64_MAX) return (int64_t)mag_;
    if (neg_ && mag_ <= (uint64_t)INT64_MAX + 1) return mag_ == 0 ? 0 : (int64_t)(0 - mag_);
    return std::nullopt;
  }
  // 2^63 is exactly representable; anything in [-2^63, 2^63) with no fraction converts.
  if (std::isfinite(num_) && num_ == std::floor(num_) && num_ >= -9223372036854775808.0 &&
      num_ < 9223372036854775808.0)
    return (int64_t)num_;
  return std::nullopt;
}

std::optional<uint64_t> Json::as_u64() const {
  if (kind_ != Kind::Number) return std::nullopt;
  if (has_int_) {
    if (neg_ && mag_ != 0) return std::nullopt;
    return mag_;
  }
  if (std::isfinite(num_) && num_ == std::floor(num_) && num_ >= 0 && num_ < 18446744073709551616.0)
    return (uint64_t)num_;
  return std::nullopt;
}

const Json* Json::get(std::string_view key) const {
  if (kind_ != Kind::Object) return nullptr;
  for (const auto& [k, v] : members_)
    if (k == key) return &v;
  return nullptr;
}

}  // namespace kiln
