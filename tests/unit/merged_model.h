// tests/unit/merged_model.h — a GGUF model with a LoRA adapter merged into its weights.
//
// The oracle of the LoRA tests: W + s * B @ A computed here in float (double sums) for
// every target the adapter names and written as f32; every other tensor byte for byte
// and all metadata as in the base (tokenizer included), so the result compiles and runs
// like the base. Independent of the lora op, the pass, the kernel and the runtime.
#pragma once

#include <string>
#include <vector>

#include "frontend/adapter.h"
#include "frontend/gguf.h"
#include "frontend/gguf_writer.h"
#include "ir/dtype.h"

namespace kiln::testing {

// Float values of a GGUF tensor, dequantized row by row.
inline std::vector<float> gguf_tensor_f32(const GgufTensor& t) {
  int64_t cols = (int64_t)t.ne[0], rows = (int64_t)(t.elements() / t.ne[0]);
  std::vector<float> v((size_t)t.elements());
  uint64_t row_bytes = t.nbytes / (uint64_t)rows;
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(t.type, t.data + r * row_bytes, v.data() + r * cols, (uint64_t)cols);
  return v;
}

// Every metadata value of `f` into `w` (types loosened to what the readers accept).
inline void copy_gguf_metadata(const GgufFile& f, GgufWriter& w) {
  for (const auto& [key, v] : f.metadata()) {
    std::string k(key);
    if (k == "general.alignment") continue;  // the writer sets its own
    if (auto s = v.as_string()) { w.add_string(k, std::string(*s)); continue; }
    if (v.type == GgufType::BOOL) { w.add_bool(k, *v.as_bool()); continue; }
    if (v.type == GgufType::F32 || v.type == GgufType::F64) { w.add_f32(k, (float)*v.as_float()); continue; }
    if (const GgufArray* a = v.as_array()) {
      if (a->elem == GgufType::STRING) {
        std::vector<std::string> ss(a->strings.begin(), a->strings.end());
        w.add_strings(k, ss);
      } else if (a->elem == GgufType::F32 || a->elem == GgufType::F64) {
        w.add_f32s(k, std::vector<float>(a->floats.begin(), a->floats.end()));
      } else {
        w.add_i32s(k, std::vector<int32_t>(a->ints.begin(), a->ints.end()));
      }
      continue;
    }
    if (v.type == GgufType::U32 || v.type == GgufType::U64 || v.type == GgufType::U8 || v.type == GgufType::U16)
      w.add_u32(k, (uint32_t)*v.as_int());
    else
      w.add_i32(k, (int32_t)*v.as_int());
  }
}

// llama.cpp's HF -> GGUF converter on q/k rows, written independently as the reshape it
// is: rows viewed as [n_head, 2, half] -> [n_head, half, 2] (the rope pairs interleaved).
inline std::vector<float> permute_like_converter(const std::vector<float>& m, int64_t rows, int64_t cols, int64_t n_head) {
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(m.size());
  int64_t dst = 0;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t two = 0; two < 2; ++two, ++dst)
        for (int64_t c = 0; c < cols; ++c)
          out[(size_t)(dst * cols + c)] = m[(size_t)(((h * 2 + two) * half + j) * cols + c)];
  return out;
}

// The base with `ad` merged (targets in GGUF conventions: B rows in the base's order).
inline std::string merged_model_gguf(const GgufFile& base, const LoraAdapter& ad) {
  GgufWriter w;
  copy_gguf_metadata(base, w);
  for (const GgufTensor& t : base.tensors()) {
    std::string name(t.name);
    std::vector<int64_t> shape;
    for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) shape.push_back((int64_t)*it);
    const LoraTarget* lt = nullptr;
    for (const auto& x : ad.targets)
      if (x.base_tensor == name) lt = &x;
    if (!lt) {
      w.add_tensor(name, t.type, shape, std::string((const char*)t.data, (size_t)t.nbytes));
      continue;
    }
    std::vector<float> W = gguf_tensor_f32(t);
    for (int64_t o = 0; o < lt->out; ++o)
      for (int64_t i = 0; i < lt->in; ++i) {
        double d = 0;
        for (int64_t k = 0; k < lt->rank; ++k) d += (double)lt->b[o * lt->rank + k] * lt->a[k * lt->in + i];
        W[o * lt->in + i] += (float)(ad.scale * d);
      }
    w.add_tensor_f32(name, DType::F32, {lt->out, lt->in}, W);
  }
  return w.bytes();
}

}  // namespace kiln::testing
