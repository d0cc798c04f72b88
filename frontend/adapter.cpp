// frontend/adapter.cpp — PEFT and GGUF LoRA adapters into one LoraAdapter.
//
// Both readers collect (layer, module) -> {A, B} pairs by matching tensor names against
// lora_names::kModules, then share one finishing step: shapes checked against the base
// GGUF tensor, rank against the limit, values converted to f32 and checked finite, PEFT
// q/k B rows permuted into GGUF order. Nothing is trusted: the GGUF LoRA path is fuzzed.
#include "frontend/adapter.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include <fmt/ranges.h>

#include "frontend/lora_names.h"
#include "ir/dtype.h"
#include "support/file.h"
#include "support/json.h"

namespace kiln {
namespace {

namespace ln = lora_names;

constexpr size_t kNumModules = sizeof(ln::kModules) / sizeof(ln::kModules[0]);

// One side (A or B) of a pair before conversion: a shape and a way to get floats.
struct Side {
  std::string name;              // the adapter's tensor name, for messages
  std::vector<int64_t> shape;    // logical row-major
  const StTensor* st = nullptr;  // PEFT
  const GgufTensor* gg = nullptr;  // GGUF
};
struct Pair { std::optional<Side> a, b; };
using PairKey = std::pair<int64_t, int>;  // (layer, module)

// "pre{digits}post" -> layer. nullopt: no match; -1: digits too long to be a layer.
std::optional<int64_t> match_layer(std::string_view name, std::string_view pre, std::string_view post) {
  if (name.size() < pre.size() + post.size() + 1 || name.substr(0, pre.size()) != pre ||
      name.substr(name.size() - post.size()) != post)
    return std::nullopt;
  std::string_view digits = name.substr(pre.size(), name.size() - pre.size() - post.size());
  if (digits.empty()) return std::nullopt;
  for (char c : digits)
    if (c < '0' || c > '9') return std::nullopt;
  if (digits.size() > 9) return -1;
  int64_t v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

// Splits a "{}" pattern from the name table.
std::pair<std::string_view, std::string_view> split_pattern(std::string_view p) {
  size_t at = p.find("{}");
  return {p.substr(0, at), p.substr(at + 2)};
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

Result<std::vector<float>> side_values(const std::string& path, const Side& s, const SafetensorsFile* st) {
  std::vector<float> v;
  if (s.st) {
    KILN_ASSIGN(v, st->to_f32(*s.st));
  } else {
    const GgufTensor& t = *s.gg;
    if (t.type != DType::F32 && t.type != DType::F16 && t.type != DType::BF16 && t.type != DType::Q8_0)
      return make_error("{}: tensor '{}': type {} is not supported for LoRA (expected f32, f16, bf16 or q8_0)",
                        path, s.name, dtype_name(t.type));
    v.resize(t.elements());
    dequantize_row(t.type, t.data, v.data(), v.size());
  }
  for (float x : v)
    if (!std::isfinite(x)) return make_error("{}: tensor '{}' holds a non-finite value", path, s.name);
  return v;
}

// Checks the pairs against the base model and converts them into `out.targets`.
Status finish(LoraAdapter& out, std::map<PairKey, Pair>& pairs, const SafetensorsFile* st,
              const LoraBase& base, const LoraOptions& opts,
              std::optional<int64_t> config_rank) {
  const std::string& path = out.path;
  if (pairs.empty()) return make_error("{}: the adapter has no LoRA tensors", path);
  for (auto& [key, pair] : pairs) {
    auto [layer, mi] = key;
    const ln::LoraModule& m = ln::kModules[mi];
    if (!pair.a || !pair.b) {
      const Side& have = pair.a ? *pair.a : *pair.b;
      return make_error("{}: tensor '{}' has no matching LoRA {} tensor", path, have.name, pair.a ? "B" : "A");
    }
    const Side& a = *pair.a;
    const Side& b = *pair.b;
    LoraTarget t;
    t.layer = layer;
    t.module = mi;
    t.base_tensor = gguf_names::layer_tensor(m.gguf, layer);
    auto shape = base.shape(layer, mi);
    if (!shape) return make_error("{}: tensor '{}': {}", path, a.name, shape.error().message);
    std::tie(t.in, t.out) = *shape;
    if (a.shape.size() != 2)
      return make_error("{}: tensor '{}': shape {}, expected [rank, {}]", path, a.name, shape_str(a.shape), t.in);
    if (b.shape.size() != 2)
      return make_error("{}: tensor '{}': shape {}, expected [{}, rank]", path, b.name, shape_str(b.shape), t.out);
    if (a.shape[1] != t.in)
      return make_error("{}: tensor '{}': shape {}, but base tensor '{}' has {} inputs (adapter made for another base?)",
                        path, a.name, shape_str(a.shape), t.base_tensor, t.in);
    if (b.shape[0] != t.out)
      return make_error("{}: tensor '{}': shape {}, but base tensor '{}' has {} outputs (adapter made for another base?)",
                        path, b.name, shape_str(b.shape), t.base_tensor, t.out);
    t.rank = a.shape[0];
    if (b.shape[1] != t.rank)
      return make_error("{}: tensor '{}': shape {} does not match rank {} of '{}'", path, b.name,
                        shape_str(b.shape), t.rank, a.name);
    if (t.rank <= 0) return make_error("{}: tensor '{}': rank 0", path, a.name);
    if (config_rank && t.rank != *config_rank)
      return make_error("{}: tensor '{}': rank {}, but adapter_config.json says r = {}", path, a.name, t.rank,
                        *config_rank);
    if (t.rank > opts.max_rank)
      return make_error("{}: tensor '{}': rank {} is above the maximum rank {}", path, a.name, t.rank, opts.max_rank);
    KILN_ASSIGN(t.a, side_values(path, a, st));
    KILN_ASSIGN(t.b, side_values(path, b, st));
    if (st && m.permute != ln::RopePermute::None) {
      int64_t groups = m.permute == ln::RopePermute::Heads ? base.n_head : base.n_head_kv;
      if (groups <= 0 || t.out % (2 * groups) != 0)
        return make_error("{}: tensor '{}': {} rows cannot be split into {} rope heads", path, b.name, t.out, groups);
      rope_permute_rows(t.b, t.out, t.rank, groups);
    }
    out.rank = std::max(out.rank, t.rank);
    out.targets.push_back(std::move(t));
  }
  return {};
}

// A file's name without extension, or a folder's name.
std::string stem_of(const std::string& path, bool folder) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  return folder ? p.filename().string() : p.stem().string();
}

}  // namespace

void rope_permute_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes, int64_t n_head,
                       bool inverse) {
  const int64_t hd = rows / n_head, half = hd / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t j = 0; j < half; ++j) {
        const int64_t gguf_row = h * hd + j * 2 + t, hf_row = h * hd + t * half + j;
        std::memcpy(dst + (inverse ? hf_row : gguf_row) * row_bytes, src + (inverse ? gguf_row : hf_row) * row_bytes,
                    (size_t)row_bytes);
      }
}

void rope_permute_rows(std::vector<float>& m, int64_t rows, int64_t cols, int64_t n_head) {
  const std::vector<float> src = m;
  rope_permute_rows(reinterpret_cast<const uint8_t*>(src.data()), reinterpret_cast<uint8_t*>(m.data()), rows,
                    cols * (int64_t)sizeof(float), n_head);
}

Result<LoraAdapter> lora_from_gguf(const GgufFile& f, const LoraBase& base, const LoraOptions& opts) {
  LoraAdapter out;
  out.path = f.path();
  out.name = stem_of(out.path, false);
  out.format = LoraFormat::Gguf;
  KILN_ASSIGN(std::string_view type, f.get_string(ln::kGeneralType));
  if (type != "adapter")
    return make_error("{}: {} is '{}', expected 'adapter' (is this a model rather than a LoRA?)", f.path(),
                      ln::kGeneralType, type);
  KILN_ASSIGN(std::string_view atype, f.get_string(ln::kAdapterType));
  if (atype != "lora") return make_error("{}: {} is '{}', expected 'lora'", f.path(), ln::kAdapterType, atype);
  KILN_ASSIGN(std::string_view arch, f.get_string(gguf_names::kArchitecture));
  if (!base.arch.empty() && arch != base.arch)
    return make_error("{}: adapter architecture '{}' does not match the base model's '{}'", f.path(), arch, base.arch);
  KILN_ASSIGN(double alpha, f.get_float(ln::kAdapterLoraAlpha));
  if (!std::isfinite(alpha)) return make_error("{}: {} is not finite", f.path(), ln::kAdapterLoraAlpha);
  out.alpha = (float)alpha;

  std::map<PairKey, Pair> pairs;
  for (const GgufTensor& t : f.tensors()) {
    std::string_view name = t.name;
    bool is_a = name.ends_with(ln::kGgufA), is_b = name.ends_with(ln::kGgufB);
    if (!is_a && !is_b) {
      if (name.ends_with(ln::kGgufNormSuffix)) continue;  // ignored, as llama.cpp does
      return make_error("{}: tensor '{}' is neither a LoRA A ({}) nor B ({}) tensor", f.path(), name, ln::kGgufA,
                        ln::kGgufB);
    }
    std::string_view base_name = name.substr(0, name.size() - (is_a ? ln::kGgufA : ln::kGgufB).size());
    std::optional<PairKey> key;
    for (size_t mi = 0; mi < kNumModules && !key; ++mi) {
      auto [pre, post] = split_pattern(ln::kModules[mi].gguf);
      if (auto l = match_layer(base_name, pre, post)) {
        if (*l < 0 || *l >= base.n_layer)
          return make_error("{}: tensor '{}': layer out of range (the base model has {} layers)", f.path(), name,
                            base.n_layer);
        key = PairKey{*l, (int)mi};
      }
    }
    if (!key)
      return make_error("{}: tensor '{}': '{}' is not a LoRA target kiln supports (attn_q/k/v/output, ffn_gate/up/down)",
                        f.path(), name, base_name);
    Side s;
    s.name = std::string(name);
    s.gg = &t;
    for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) s.shape.push_back((int64_t)*it);
    auto& slot = is_a ? pairs[*key].a : pairs[*key].b;
    if (slot) return make_error("{}: tensor '{}' appears twice", f.path(), name);
    slot = std::move(s);
  }
  KILN_TRY(finish(out, pairs, nullptr, base, opts, std::nullopt));
  // llama.cpp scales each target by alpha / (its own rank), or 1 when alpha is 0. Keep one
  // adapter scale and fold any target's different factor into its B.
  out.scale = out.alpha != 0.0f ? out.alpha / (float)out.rank : 1.0f;
  for (LoraTarget& t : out.targets) {
    if (t.rank == out.rank || out.alpha == 0.0f) continue;
    float ratio = (float)out.rank / (float)t.rank;
    for (float& x : t.b) x *= ratio;
  }
  return out;
}

Result<LoraAdapter> lora_from_peft(std::string_view config_json, const std::string& config_path,
                                   const SafetensorsFile& weights, const LoraBase& base, const LoraOptions& opts) {
  LoraAdapter out;
  out.path = std::filesystem::path(config_path).parent_path().string();
  if (out.path.empty()) out.path = config_path;
  out.name = stem_of(out.path, true);
  out.format = LoraFormat::Peft;
  const std::string& cp = config_path;

  auto parsed = Json::parse(config_json, 64);
  if (!parsed) return make_error("{}: not valid JSON: {}", cp, parsed.error().message);
  const Json& cfg = *parsed;
  if (!cfg.as_object()) return make_error("{}: not a JSON object", cp);
  auto present = [&](std::string_view k) -> const Json* {
    const Json* v = cfg.get(k);
    return v && !v->is_null() ? v : nullptr;
  };
  auto optional_bool = [&](std::string_view k) -> Result<bool> {
    const Json* v = present(k);
    if (!v) return false;
    if (auto b = v->as_bool()) return *b;
    return make_error("{}: '{}' is not true or false", cp, k);
  };

  if (const Json* v = present(ln::kCfgPeftType)) {
    const std::string* s = v->as_string();
    if (!s || *s != "LORA") return make_error("{}: '{}' is not \"LORA\"", cp, ln::kCfgPeftType);
  }
  const Json* r = present(ln::kCfgRank);
  if (!r) return make_error("{}: missing key '{}' (the LoRA rank)", cp, ln::kCfgRank);
  auto rank = r->as_int();
  if (!rank || *rank <= 0) return make_error("{}: '{}' is not a positive integer", cp, ln::kCfgRank);
  const Json* a = present(ln::kCfgAlpha);
  if (!a) return make_error("{}: missing key '{}'", cp, ln::kCfgAlpha);
  auto alpha = a->as_number();
  if (!alpha || !std::isfinite(*alpha)) return make_error("{}: '{}' is not a number", cp, ln::kCfgAlpha);
  KILN_ASSIGN(out.rslora, optional_bool(ln::kCfgRsLora));
  // fan_in_fan_out concerns GPT-2 style Conv1D base layers; PEFT ignores it for the
  // nn.Linear layers of LLaMA, and so does kiln (A and B keep their usual shapes).
  KILN_ASSIGN(bool fan_in_fan_out, optional_bool(ln::kCfgFanInFanOut));
  (void)fan_in_fan_out;
  KILN_ASSIGN(bool dora, optional_bool(ln::kCfgUseDora));
  if (dora) return make_error("{}: '{}' is true: DoRA adapters are not supported", cp, ln::kCfgUseDora);
  if (const Json* v = present(ln::kCfgBias)) {
    const std::string* s = v->as_string();
    if (!s || *s != "none")
      return make_error("{}: '{}' must be \"none\": LoRA bias terms are not supported", cp, ln::kCfgBias);
  }
  if (const Json* v = present(ln::kCfgModulesToSave)) {
    const auto* arr = v->as_array();
    if (!arr || !arr->empty())
      return make_error("{}: '{}' is set: adapters that replace whole modules are not supported", cp,
                        ln::kCfgModulesToSave);
  }
  for (std::string_view k : {ln::kCfgRankPattern, ln::kCfgAlphaPattern}) {
    if (const Json* v = present(k)) {
      const auto* o = v->as_object();
      if (!o || !o->empty()) return make_error("{}: '{}' is set: per-module ranks or alphas are not supported", cp, k);
    }
  }
  if (const Json* v = present(ln::kCfgBaseModel)) {
    if (const std::string* s = v->as_string()) out.base_model = *s;
  }
  const Json* tm = present(ln::kCfgTargetModules);
  if (!tm) return make_error("{}: missing key '{}'", cp, ln::kCfgTargetModules);
  bool targeted[kNumModules] = {};
  if (const std::string* s = tm->as_string()) {
    if (*s != ln::kPeftAllLinear)
      return make_error("{}: '{}' is the pattern \"{}\": only a list of module names or \"{}\" is supported", cp,
                        ln::kCfgTargetModules, *s, ln::kPeftAllLinear);
    std::fill(std::begin(targeted), std::end(targeted), true);
  } else if (const auto* arr = tm->as_array()) {
    for (const Json& e : *arr) {
      const std::string* s = e.as_string();
      if (!s) return make_error("{}: '{}' holds a value that is not a string", cp, ln::kCfgTargetModules);
      size_t mi = 0;
      while (mi < kNumModules && ln::kModules[mi].peft != *s) ++mi;
      if (mi == kNumModules)
        return make_error("{}: unknown target module '{}' (kiln supports q_proj, k_proj, v_proj, o_proj, gate_proj, "
                          "up_proj, down_proj)", cp, *s);
      targeted[mi] = true;
    }
  } else {
    return make_error("{}: '{}' is neither a list nor a string", cp, ln::kCfgTargetModules);
  }
  out.alpha = (float)*alpha;

  std::map<PairKey, Pair> pairs;
  const std::string& wp = weights.path();
  for (const StTensor& t : weights.tensors()) {
    std::optional<PairKey> k;
    bool is_a = false;
    for (size_t mi = 0; mi < kNumModules && !k; ++mi) {
      for (bool side_a : {true, false}) {
        std::string post = fmt::format(".{}{}", ln::kModules[mi].hf, side_a ? ln::kPeftA : ln::kPeftB);
        if (auto l = match_layer(t.name, ln::kPeftPrefix, post)) {
          if (*l < 0 || *l >= base.n_layer)
            return make_error("{}: tensor '{}': layer out of range (the base model has {} layers)", wp, t.name,
                              base.n_layer);
          if (!targeted[mi])
            return make_error("{}: tensor '{}': module '{}' is not in {}'s target_modules", wp, t.name,
                              ln::kModules[mi].peft, ln::kPeftConfigFile);
          k = PairKey{*l, (int)mi};
          is_a = side_a;
          break;
        }
      }
    }
    if (!k)
      return make_error("{}: tensor '{}' is not a LoRA tensor of a module kiln supports (expected names like "
                        "'{}0.self_attn.q_proj{}')", wp, t.name, ln::kPeftPrefix, ln::kPeftA);
    Side s;
    s.name = t.name;
    s.st = &t;
    s.shape = t.shape;
    auto& slot = is_a ? pairs[*k].a : pairs[*k].b;
    if (slot) return make_error("{}: tensor '{}' appears twice", wp, t.name);
    slot = std::move(s);
  }
  // Messages about tensors name the safetensors file.
  std::string folder = out.path;
  out.path = wp;
  KILN_TRY(finish(out, pairs, &weights, base, opts, *rank));
  out.path = folder;
  out.rank = *rank;
  out.scale = out.rslora ? out.alpha / std::sqrt((float)out.rank) : out.alpha / (float)out.rank;
  return out;
}

std::string lora_targets_of(const std::vector<LoraAdapter>& adapters) {
  bool used[ln::kNumModules] = {};
  for (const LoraAdapter& a : adapters)
    for (const LoraTarget& t : a.targets) used[t.module] = true;
  std::string list;
  for (int m = 0; m < ln::kNumModules; ++m)
    if (used[m]) list += (list.empty() ? "" : ",") + std::string(ln::kModules[m].name);
  return list;
}

Result<LoraAdapter> load_lora_adapter(const std::string& path, const LoraBase& base, const LoraOptions& opts) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  fs::path dir;
  if (fs::is_directory(p, ec)) {
    dir = p;
  } else if (p.extension() == ".safetensors") {
    dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  } else {
    auto f = GgufFile::open(path);
    if (!f.ok() && f.error().message.find("not a GGUF file") != std::string::npos)
      return make_error("{}: not a LoRA adapter: expected a PEFT folder ({} and {}), an {} file or a GGUF LoRA file",
                        path, ln::kPeftConfigFile, ln::kPeftWeightsFile, ln::kPeftWeightsFile);
    if (!f.ok()) return f.error();
    return lora_from_gguf(**f, base, opts);
  }
  if (fs::is_directory(p, ec) && !fs::exists(dir / std::string(ln::kPeftConfigFile), ec))
    return make_error("{}: not a PEFT adapter folder: it has no {} (expected a PEFT folder, an {} file or a GGUF "
                      "LoRA file)", path, ln::kPeftConfigFile, ln::kPeftWeightsFile);
  fs::path weights = fs::is_directory(p, ec) ? dir / std::string(ln::kPeftWeightsFile) : p;
  if (!fs::exists(weights, ec) && fs::exists(dir / std::string(ln::kPeftWeightsBinFile), ec))
    return make_error("{}: only {} is supported, not the pickle {}: re-save the adapter with safe_serialization",
                      path, ln::kPeftWeightsFile, ln::kPeftWeightsBinFile);
  std::string config_path = (dir / std::string(ln::kPeftConfigFile)).string();
  KILN_ASSIGN(std::string config, read_file(config_path));
  KILN_ASSIGN(auto st, SafetensorsFile::open(weights.string()));
  KILN_ASSIGN(LoraAdapter a, lora_from_peft(config, config_path, *st, base, opts));
  a.path = path;
  a.name = stem_of(dir.string(), true);
  return a;
}

}  // namespace kiln
