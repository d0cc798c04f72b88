// tests/unit/tiny_model.h — a tiny random LLaMA in GGUF form, for fast exact tests.
#pragma once

#include <random>
#include <string>

#include "frontend/gguf_writer.h"
#include "frontend/llama.h"

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
  LlamaConfig c;
  c.arch = s.arch;
  c.name = "tiny test llama";
  c.n_ctx_train = s.ctx;
  c.n_embd = s.embd;
  c.n_layer = s.layers;
  c.n_ff = s.ff;
  c.n_head = s.heads;
  c.n_head_kv = s.kv_heads;
  c.rope_theta = 10000.0;
  c.n_rot = s.embd / s.heads;
  c.rms_eps = 1e-5;
  write_llama_config(w, c);
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
