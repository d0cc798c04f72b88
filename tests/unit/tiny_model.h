// tests/unit/tiny_model.h — a tiny random LLaMA in GGUF form, for fast exact tests.
#pragma once

#include <random>
#include <string>

#include "frontend/gguf_writer.h"

namespace kiln::testing {

struct TinyLlamaSpec {
  int64_t vocab = 64, embd = 64, layers = 2, heads = 4, kv_heads = 2, ff = 96, ctx = 128;
  DType matrix_type = DType::Q4_1;
  DType embed_type = DType::Q8_0;
  bool tied = true;
  std::string arch = "llama";
  uint32_t seed = 1;
};

inline GgufWriter tiny_llama_writer(const TinyLlamaSpec& s) {
  GgufWriter w;
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](int64_t n, float scale) {
    std::vector<float> v((size_t)n);
    for (auto& x : v) x = nd(rng) * scale;
    return v;
  };
  auto ones = [&](int64_t n) {
    std::vector<float> v((size_t)n);
    for (auto& x : v) x = 1.0f + 0.1f * nd(rng);
    return v;
  };
  const std::string a = s.arch;
  w.add_string("general.architecture", a);
  w.add_string("general.name", "tiny test llama");
  w.add_u32(a + ".context_length", (uint32_t)s.ctx);
  w.add_u32(a + ".embedding_length", (uint32_t)s.embd);
  w.add_u32(a + ".block_count", (uint32_t)s.layers);
  w.add_u32(a + ".feed_forward_length", (uint32_t)s.ff);
  w.add_u32(a + ".attention.head_count", (uint32_t)s.heads);
  w.add_u32(a + ".attention.head_count_kv", (uint32_t)s.kv_heads);
  w.add_f32(a + ".rope.freq_base", 10000.0f);
  w.add_u32(a + ".rope.dimension_count", (uint32_t)(s.embd / s.heads));
  w.add_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  const int64_t hd = s.embd / s.heads, kvf = s.kv_heads * hd;
  float ws = 1.0f / std::sqrt((float)s.embd);
  w.add_tensor_f32("token_embd.weight", s.embed_type, {s.vocab, s.embd}, rnd(s.vocab * s.embd, 1.0f));
  for (int64_t l = 0; l < s.layers; ++l) {
    auto n = [&](const char* t) { return "blk." + std::to_string(l) + "." + t + ".weight"; };
    w.add_tensor_f32(n("attn_norm"), DType::F32, {s.embd}, ones(s.embd));
    w.add_tensor_f32(n("attn_q"), s.matrix_type, {s.embd, s.embd}, rnd(s.embd * s.embd, ws));
    w.add_tensor_f32(n("attn_k"), s.matrix_type, {kvf, s.embd}, rnd(kvf * s.embd, ws));
    w.add_tensor_f32(n("attn_v"), s.matrix_type, {kvf, s.embd}, rnd(kvf * s.embd, ws));
    w.add_tensor_f32(n("attn_output"), s.matrix_type, {s.embd, s.embd}, rnd(s.embd * s.embd, ws));
    w.add_tensor_f32(n("ffn_norm"), DType::F32, {s.embd}, ones(s.embd));
    w.add_tensor_f32(n("ffn_gate"), s.matrix_type, {s.ff, s.embd}, rnd(s.ff * s.embd, ws));
    w.add_tensor_f32(n("ffn_up"), s.matrix_type, {s.ff, s.embd}, rnd(s.ff * s.embd, ws));
    w.add_tensor_f32(n("ffn_down"), s.matrix_type, {s.embd, s.ff}, rnd(s.ff * s.embd, 1.0f / std::sqrt((float)s.ff)));
  }
  w.add_tensor_f32("output_norm.weight", DType::F32, {s.embd}, ones(s.embd));
  if (!s.tied) w.add_tensor_f32("output.weight", s.matrix_type, {s.vocab, s.embd}, rnd(s.vocab * s.embd, ws));
  return w;
}

inline std::string tiny_llama_gguf(const TinyLlamaSpec& s = {}) { return tiny_llama_writer(s).bytes(); }

}  // namespace kiln::testing
