// tools/kiln/args.h — a small command-line parser: --flag, --key=value, --key value, -v.
#pragma once

#include <map>
#include <optional>
#include <utility>
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

// A subcommand's command line: what it takes and what its --help prints.
struct CommandSpec {
  std::string name;     // "tokenize": messages read "kiln tokenize: ..."
  std::string help;     // the usage lines and the description, printed before the options
  std::vector<OptionSpec> options;
  std::string operand;  // the one positional operand, as the usage names it ("MODEL")
  std::vector<std::pair<std::string, std::string>> required = {};  // as missing_arguments takes them
  std::vector<std::string> standalone = {};  // flags that need no operand (--list-profiles)
  std::string epilogue = {};                 // printed after the options
};

// The prologue every subcommand shares. Parses argv[2..] against spec.options; then
//  * a wrong command line (unknown option, missing operand or required option) prints its
//    error to stderr and sets `status` to 2;
//  * --help prints spec's help to stdout and sets `status` to 0;
// and both return nothing, so the command returns `status`. Otherwise it sets the log
// verbosity (-v) and returns the arguments; with one of spec.standalone given, the operand
// and required options are not asked for.
std::optional<Args> parse_command(int argc, char** argv, const CommandSpec& spec, int& status);

}  // namespace kiln::cli
