// support/json.h — a small JSON reader for the files kiln reads at run time.
//
// adapter_config.json and safetensors headers must be readable inside libkiln_rt, which
// does not link LLVM, so kiln carries its own reader: RFC 8259 syntax, a nesting limit
// (no recursion can exhaust the stack on hostile input), objects keep every member in
// file order (so callers can reject repeated keys), numbers keep their text's integer
// value when it has one. Errors name the byte offset. Fuzzed through adapter_fuzz.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/result.h"

namespace kiln {

class Json {
 public:
  enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };
  using Member = std::pair<std::string, Json>;

  // Parses one JSON value (surrounding whitespace allowed, nothing else after it).
  static Result<Json> parse(std::string_view text, int max_depth = 64);

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  std::optional<bool> as_bool() const;
  std::optional<double> as_number() const;
  // An integer: written without fraction/exponent, or a float with an exact integer value
  // (safetensors writers differ); nullopt if it is not one or does not fit.
  std::optional<int64_t> as_int() const;
  std::optional<uint64_t> as_u64() const;
  const std::string* as_string() const { return kind_ == Kind::String ? &str_ : nullptr; }
  const std::vector<Json>* as_array() const { return kind_ == Kind::Array ? &items_ : nullptr; }
  const std::vector<Member>* as_object() const { return kind_ == Kind::Object ? &members_ : nullptr; }
  // The first member named `key` of an object (nullptr: absent or not an object).
  const Json* get(std::string_view key) const;

 private:
  friend class JsonParser;
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double num_ = 0;
  bool has_int_ = false;  // the number's text was an integer that fits int64/uint64
  bool neg_ = false;
  uint64_t mag_ = 0;      // |integer value| when has_int_
  std::string str_;
  std::vector<Json> items_;
  std::vector<Member> members_;
};

}  // namespace kiln
