// tools/kiln/args.h — a small command-line parser: --flag, --key=value, --key value, -v.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "support/result.h"

namespace kiln::cli {

struct OptionSpec {
  std::string name;     // "max-tokens"
  std::string meta;     // "N" (empty for a boolean flag)
  std::string help;
  bool repeated = false;
};

class Args {
 public:
  // Parses argv[first..]; options not in `specs` are errors naming the option.
  static Result<Args> parse(int argc, char** argv, int first, const std::vector<OptionSpec>& specs);

  bool flag(const std::string& name) const { return flags_.count(name) > 0; }
  std::optional<std::string> get(const std::string& name) const;
  std::vector<std::string> all(const std::string& name) const;
  Result<long long> get_int(const std::string& name, long long def, long long lo, long long hi) const;
  Result<double> get_float(const std::string& name, double def, double lo, double hi) const;
  const std::vector<std::string>& positional() const { return positional_; }
  int verbosity() const { return verbosity_; }

 private:
  std::set<std::string> flags_;
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> positional_;
  int verbosity_ = 0;
};

std::string format_options(const std::vector<OptionSpec>& specs);

// What a command line lacks, for an error that says it rather than the whole usage: ""
// when it has the one positional `operand` ("MODEL") and every required option (name,
// how the usage spells it: {"o", "-o DIR"}), else e.g. "missing -o DIR".
std::string missing_arguments(const Args& args, const std::string& operand,
                              const std::vector<std::pair<std::string, std::string>>& required = {});

// Prints "kiln CMD: WHAT (see `kiln CMD --help`)" to stderr; returns 2, the exit status of
// a wrong command line.
int usage_error(const std::string& cmd, const std::string& what);

}  // namespace kiln::cli
