// support/result.h — Error and Result<T>, the error currency of kiln.
//
// kiln reports bad user input (files, tensors, adapters, IR text) as values, never by
// asserting or throwing across module boundaries. An Error carries one message that
// already names the thing at fault ("model.gguf: tensor 'blk.0.attn_q.weight': ...").
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace kiln {

struct Error {
  std::string message;
};

// Builds an Error with fmt-style formatting.
template <typename... Args>
Error make_error(fmt::format_string<Args...> f, Args&&... args) {
  return Error{fmt::format(f, std::forward<Args>(args)...)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error e) : v_(std::move(e)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }
  Error take_error() { assert(!ok()); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

// Result of an operation with no value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error e) : err_(std::move(e)) {}
  static Status success() { return {}; }
  bool ok() const { return !err_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { assert(!ok()); return *err_; }

 private:
  std::optional<Error> err_;
};

}  // namespace kiln

// Propagate an error from an expression yielding Status or Result<T>.
#define KILN_TRY(expr)                                  \
  do {                                                  \
    auto kiln_try_r_ = (expr);                          \
    if (!kiln_try_r_.ok()) return kiln_try_r_.error();  \
  } while (0)

#define KILN_CONCAT_INNER_(a, b) a##b
#define KILN_CONCAT_(a, b) KILN_CONCAT_INNER_(a, b)
// KILN_ASSIGN(auto x, expr): x = value of expr or return its error. It expands to two
// statements, so give it braces under an if/else.
#define KILN_ASSIGN(decl, expr) KILN_ASSIGN_IMPL_(KILN_CONCAT_(kiln_r_, __LINE__), decl, expr)
#define KILN_ASSIGN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                       \
  if (!tmp.ok()) return tmp.error();       \
  decl = std::move(tmp).value()
