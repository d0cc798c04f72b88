// tools/kiln/args.cpp — see args.h.
#include "tools/kiln/args.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "support/log.h"

namespace kiln::cli {

Result<Args> Args::parse(int argc, char** argv, int first, const std::vector<OptionSpec>& specs) {
  Args a;
  auto find = [&](const std::string& n) -> const OptionSpec* {
    for (auto& s : specs)
      if (s.name == n) return &s;
    return nullptr;
  };
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "-v" || s == "-vv" || s == "-vvv") { a.verbosity_ += (int)s.size() - 1; continue; }
    if (s == "--verbose") { a.verbosity_++; continue; }
    if (s == "--help" || s == "-h") { a.flags_.insert("help"); continue; }
    if (s.size() > 2 && s.rfind("--", 0) == 0) {
      std::string name = s.substr(2), value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      const OptionSpec* spec = find(name);
      if (!spec) return make_error("unknown option '--{}' (see --help)", name);
      if (spec->meta.empty()) {
        if (has_value) return make_error("option '--{}' takes no value", name);
        a.flags_.insert(name);
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) return make_error("option '--{}' needs a value ({})", name, spec->meta);
        value = argv[++i];
      }
      if (!spec->repeated && a.values_.count(name))
        return make_error("option '--{}' given twice", name);
      a.values_.emplace(name, value);
      continue;
    }
    // Single-letter options ("-o FILE") are spelled like their long form "--o".
    if (s.size() == 2 && s[0] == '-' && std::isalpha((unsigned char)s[1]) && find(s.substr(1))) {
      const OptionSpec* spec = find(s.substr(1));
      if (spec->meta.empty()) { a.flags_.insert(spec->name); continue; }
      if (i + 1 >= argc) return make_error("option '{}' needs a value ({})", s, spec->meta);
      a.values_.emplace(spec->name, argv[++i]);
      continue;
    }
    if (s.size() > 1 && s[0] == '-' && s != "-") return make_error("unknown option '{}' (see --help)", s);
    a.positional_.push_back(s);
  }
  return a;
}

std::optional<std::string> Args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Args::all(const std::string& name) const {
  std::vector<std::string> out;
  auto [b, e] = values_.equal_range(name);
  for (auto it = b; it != e; ++it) out.push_back(it->second);
  return out;
}

Result<long long> Args::get_int(const std::string& name, long long def, long long lo, long long hi) const {
  auto v = get(name);
  if (!v) return def;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end || errno)
    return make_error("option '--{}' expects an integer, got '{}'", name, *v);
  if (x < lo || x > hi) return make_error("option '--{}' must be in {}..{}, got {}", name, lo, hi, x);
  return x;
}

Result<double> Args::get_float(const std::string& name, double def, double lo, double hi) const {
  auto v = get(name);
  if (!v) return def;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end) return make_error("option '--{}' expects a number, got '{}'", name, *v);
  if (!(x >= lo && x <= hi)) return make_error("option '--{}' must be in {}..{}, got {}", name, lo, hi, x);
  return x;
}

std::string format_options(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (auto& s : specs) {
    std::string left = (s.name.size() == 1 ? "-" + s.name + (s.meta.empty() ? "" : " " + s.meta)
                                            : "--" + s.name + (s.meta.empty() ? "" : "=" + s.meta));
    out += fmt::format("  {:<24} {}\n", left, s.help);
  }
  out += fmt::format("  {:<24} {}\n", "-v, -vv", "more logging (info, debug)");
  out += fmt::format("  {:<24} {}\n", "--help", "show this help");
  return out;
}

std::string missing_arguments(const Args& args, const std::string& operand,
                              const std::vector<std::pair<std::string, std::string>>& required) {
  const size_t n = args.positional().size();
  if (n == 0) return "missing " + operand;
  if (n > 1) return fmt::format("one {} expected, {} operands given ('{}' is extra)", operand, n, args.positional()[1]);
  for (const auto& [name, spelling] : required)
    if (!args.get(name)) return "missing " + spelling;
  return "";
}

int usage_error(const std::string& cmd, const std::string& what) {
  fmt::print(stderr, "kiln {}: {} (see `kiln {} --help`)\n", cmd, what, cmd);
  return 2;
}

std::optional<Args> parse_command(int argc, char** argv, const CommandSpec& spec, int& status) {
  status = 2;
  auto args = Args::parse(argc, argv, 2, spec.options);
  if (!args.ok()) {
    fmt::print(stderr, "kiln {}: {}\n", spec.name, args.error().message);
    return std::nullopt;
  }
  if (args->flag("help")) {
    fmt::print(stdout, "{}\n\noptions:\n{}{}", spec.help, format_options(spec.options), spec.epilogue);
    status = 0;
    return std::nullopt;
  }
  bool standalone = false;
  for (const std::string& flag : spec.standalone) standalone = standalone || args->flag(flag);
  if (!standalone) {
    if (std::string missing = missing_arguments(*args, spec.operand, spec.required); !missing.empty()) {
      usage_error(spec.name, missing);
      return std::nullopt;
    }
  }
  set_verbosity(args->verbosity());
  status = 0;
  return std::move(*args);
}

}  // namespace kiln::cli
