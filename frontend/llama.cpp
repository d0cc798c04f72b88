// frontend/llama.cpp — reads LLaMA hyperparameters and lowers the model to graph IR.
//
// One decoder layer, as GGUF LLaMA weights expect it:
//
//   x ─ rms_norm ─┬ matmul q ─ rope ─────────────────┐
//     │           ├ matmul k ─ rope ─ kv_write(k$) ─ attention ─ matmul o ─ add ─ x'
//     │           └ matmul v ──────── kv_write(v$) ─┘                       │
//     └─────────────────────────────────────────────────────────────────────┘
//   x' ─ rms_norm ─┬ matmul gate ─ silu ─ mul ─ matmul down ─ add ─ x''
//      │           └ matmul up ─────────┘                    │
//      └─────────────────────────────────────────────────────┘
#include "frontend/llama.h"

#include <fmt/format.h>

#include "frontend/gguf_names.h"
#include "frontend/gguf_writer.h"
#include "ir/text.h"

#include <algorithm>
#include <set>

namespace kiln {

namespace names = gguf_names;

std::vector<int64_t> logical_shape(const GgufTensor& t) {
  std::vector<int64_t> s;
  for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) s.push_back((int64_t)*it);
  // Trailing size-1 outer dimensions are dropped by GGUF writers only sometimes; keep
  // the shape exactly as stored.
  return s;
}

std::optional<WeightView> GgufWeights::find(std::string_view name) const {
  const GgufTensor* t = f_->tensor(name);
  if (!t) return std::nullopt;
  return WeightView{t->type, logical_shape(*t), t->data, t->nbytes};
}

namespace {

Result<int64_t> bounded(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi) {
  KILN_ASSIGN(int64_t v, f.get_int(key));
  if (v < lo || v > hi)
    return make_error("{}: key '{}' = {} is outside the sensible range {}..{}", f.path(), key, v,
                      lo, hi);
  return v;
}

}  // namespace

Result<LlamaConfig> read_llama_config(const GgufFile& f) {
  LlamaConfig c;
  KILN_ASSIGN(std::string_view arch, f.get_string(names::kArchitecture));
  if (arch != "llama")
    return make_error("{}: architecture '{}' is not supported (key '{}'; kiln compiles 'llama')",
                      f.path(), arch, names::kArchitecture);
  c.arch = std::string(arch);
  auto key = [&](std::string_view s) { return names::arch_key(arch, s); };
  if (const GgufValue* v = f.find(names::kName); v && v->as_string()) c.name = std::string(*v->as_string());
  KILN_ASSIGN(c.n_embd, bounded(f, key(names::kEmbeddingLength), 1, 1 << 16));
  KILN_ASSIGN(c.n_layer, bounded(f, key(names::kBlockCount), 1, 1024));
  KILN_ASSIGN(c.n_head, bounded(f, key(names::kHeadCount), 1, 1024));
  c.n_head_kv = c.n_head;
  if (f.find(key(names::kHeadCountKv))) {
    KILN_ASSIGN(c.n_head_kv, bounded(f, key(names::kHeadCountKv), 1, 1024));
  }
  KILN_ASSIGN(c.n_ff, bounded(f, key(names::kFeedForwardLength), 1, 1 << 20));
  KILN_ASSIGN(c.n_ctx_train, bounded(f, key(names::kContextLength), 1, 1 << 24));
  if (c.n_embd % c.n_head)
    return make_error("{}: embedding length {} is not a multiple of the head count {}", f.path(),
                      c.n_embd, c.n_head);
  if (c.n_head % c.n_head_kv)
    return make_error("{}: head count {} is not a multiple of the KV head count {} (key '{}')",
                      f.path(), c.n_head, c.n_head_kv, key(names::kHeadCountKv));
  c.head_dim = c.n_embd / c.n_head;
  if (f.find(key(names::kKeyLength))) {
    KILN_ASSIGN(int64_t kl, bounded(f, key(names::kKeyLength), 1, 1 << 12));
    if (kl != c.head_dim)
      return make_error("{}: key '{}' = {} differs from embedding/heads = {}; not supported",
                        f.path(), key(names::kKeyLength), kl, c.head_dim);
  }
  c.n_rot = c.head_dim;
  if (f.find(key(names::kRopeDimensionCount))) {
    KILN_ASSIGN(c.n_rot, bounded(f, key(names::kRopeDimensionCount), 2, c.head_dim));
  }
  if (c.n_rot % 2)
    return make_error("{}: key '{}' = {} must be even", f.path(), key(names::kRopeDimensionCount),
                      c.n_rot);
  if (f.find(key(names::kRopeFreqBase))) {
    KILN_ASSIGN(c.rope_theta, f.get_float(key(names::kRopeFreqBase)));
  }
  if (!(c.rope_theta > 1.0 && c.rope_theta < 1e12))
    return make_error("{}: key '{}' = {} is not a sensible RoPE base", f.path(),
                      key(names::kRopeFreqBase), c.rope_theta);
  KILN_ASSIGN(c.rms_eps, f.get_float(key(names::kRmsEps)));
  if (!(c.rms_eps > 0 && c.rms_eps < 1))
    return make_error("{}: key '{}' = {} is not a sensible epsilon", f.path(), key(names::kRmsEps),
                      c.rms_eps);
  // The vocabulary size comes from the embedding table, which must agree with the key.
  const GgufTensor* emb = f.tensor(names::kTokenEmbd);
  if (!emb) return make_error("{}: missing tensor '{}'", f.path(), names::kTokenEmbd);
  if (emb->ne.size() != 2 || (int64_t)emb->ne[0] != c.n_embd)
    return make_error("{}: tensor '{}' has shape [{}], expected [{}, n_vocab]", f.path(),
                      names::kTokenEmbd, fmt::join(logical_shape(*emb), ","), c.n_embd);
  c.n_vocab = (int64_t)emb->ne[1];
  if (f.find(key(names::kVocabSize))) {
    KILN_ASSIGN(int64_t nv, f.get_int(key(names::kVocabSize)));
    if (nv != c.n_vocab)
      return make_error("{}: key '{}' = {} but '{}' has {} rows", f.path(), key(names::kVocabSize),
                        nv, names::kTokenEmbd, c.n_vocab);
  }
  c.tied_output = f.tensor(names::kOutput) == nullptr;
  // Scaled rope: LLaMA 3.1/3.2's per-pair factors (the rope_freqs.weight tensor, which
  // build_llama_graph feeds to every rope) are supported; linear and YaRN scaling change
  // every angle another way and are refused rather than run as plain rope.
  if (const GgufValue* t = f.find(key(names::kRopeScalingType));
      t && t->as_string() && *t->as_string() != "none" && *t->as_string() != "llama3")
    return make_error("{}: key '{}' = \"{}\": this scaled rope is not supported yet (LLaMA 3's factors are)",
                      f.path(), key(names::kRopeScalingType), *t->as_string());
  return c;
}

void write_llama_config(GgufWriter& w, const LlamaConfig& c) {
  auto key = [&](std::string_view k) { return names::arch_key(c.arch, k); };
  w.add_string(std::string(names::kArchitecture), c.arch);
  w.add_string(std::string(names::kName), c.name);
  w.add_u32(key(names::kContextLength), (uint32_t)c.n_ctx_train);
  w.add_u32(key(names::kEmbeddingLength), (uint32_t)c.n_embd);
  w.add_u32(key(names::kBlockCount), (uint32_t)c.n_layer);
  w.add_u32(key(names::kFeedForwardLength), (uint32_t)c.n_ff);
  w.add_u32(key(names::kHeadCount), (uint32_t)c.n_head);
  w.add_u32(key(names::kHeadCountKv), (uint32_t)c.n_head_kv);
  w.add_f32(key(names::kRopeFreqBase), (float)c.rope_theta);
  w.add_u32(key(names::kRopeDimensionCount), (uint32_t)c.n_rot);
  w.add_f32(key(names::kRmsEps), (float)c.rms_eps);
}

Result<Graph> build_llama_graph(std::shared_ptr<const GgufFile> f, const LlamaConfig& c,
                                const LlamaBuildOptions& opts) {
  if (opts.max_context < 1 || opts.max_context > (1 << 20))
    return make_error("max context {} is outside 1..{}", opts.max_context, 1 << 20);
  if (opts.max_streams < 1 || opts.max_streams > 256)
    return make_error("max streams {} is outside 1..256", opts.max_streams);
  std::string gname;
  for (char ch : c.name.empty() ? std::string("llama") : c.name)
    gname += std::isalnum((unsigned char)ch) ? (char)std::tolower((unsigned char)ch) : '_';
  Graph g(gname);
  auto weights = std::make_shared<GgufWeights>(f);
  g.set_weights(weights);
  using Attrs = std::map<std::string, Attr, std::less<>>;

  // A weight node for `name`, checked against the expected logical shape.
  auto weight = [&](const std::string& name, std::vector<int64_t> shape) -> Result<Node*> {
    const GgufTensor* t = f->tensor(name);
    if (!t) return make_error("{}: missing tensor '{}'", f->path(), name);
    auto actual = logical_shape(*t);
    if (actual != shape)
      return make_error("{}: tensor '{}' has shape [{}], expected [{}]", f->path(), name,
                        fmt::join(actual, ","), fmt::join(shape, ","));
    return g.add(Op::Weight, {}, TensorType{t->type, shape}, Attrs{{"name", name}}, name);
  };
  // The matrix operand of a matmul: quantized GGUF blocks are dequantized explicitly in
  // the IR (fuse-dequant-matmul makes matmul(x, dequant(W)) one quantized matmul again).
  auto mat = [&](Node* w) {
    return is_quantized(w->type().dtype) ? g.add(Op::Dequant, {w}, {DType::F32, w->type().shape}, {}, w->loc())
                                         : w;
  };
  const int64_t D = c.n_embd, hd = c.head_dim, kvF = c.n_head_kv * hd;

  Node* tokens = g.add(Op::Input, {}, {DType::I32, {kDynamic}}, Attrs{{"name", std::string("tokens")}});
  Node* pos = g.add(Op::Input, {}, {DType::I32, {kDynamic}}, Attrs{{"name", std::string("positions")}});
  Node* streams = g.add(Op::Input, {}, {DType::I32, {kDynamic}}, Attrs{{"name", std::string("streams")}});
  Node* logit_rows = opts.all_logits ? nullptr
      : g.add(Op::Input, {}, {DType::I32, {kDynamic}}, Attrs{{"name", std::string("logit_rows")}});
  KILN_ASSIGN(Node* embd, weight(std::string(names::kTokenEmbd), {c.n_vocab, D}));
  KILN_ASSIGN(Node* x, g.build(Op::Embed, {embd, tokens}, {}, "token_embd"));
  // LLaMA 3.1/3.2's scaled rope: per-pair frequency factors, shared by every layer.
  Node* rope_freqs = nullptr;
  if (f->tensor(names::kRopeFreqs)) {
    KILN_ASSIGN(rope_freqs, weight(std::string(names::kRopeFreqs), {c.n_rot / 2}));
    if (rope_freqs->type().dtype != DType::F32)
      return make_error("{}: tensor '{}' is {}, expected f32", f->path(), names::kRopeFreqs,
                        dtype_name(rope_freqs->type().dtype));
  }

  for (int64_t l = 0; l < c.n_layer; ++l) {
    auto W = [&](std::string_view pattern, std::vector<int64_t> shape) {
      return weight(names::layer_tensor(pattern, l), std::move(shape));
    };
    std::string L = fmt::format("blk.{}", l);
    KILN_ASSIGN(Node* attn_norm, W(names::kAttnNorm, {D}));
    KILN_ASSIGN(Node* wq, W(names::kAttnQ, {D, D}));
    KILN_ASSIGN(Node* wk, W(names::kAttnK, {kvF, D}));
    KILN_ASSIGN(Node* wv, W(names::kAttnV, {kvF, D}));
    KILN_ASSIGN(Node* wo, W(names::kAttnOut, {D, D}));
    KILN_ASSIGN(Node* ffn_norm, W(names::kFfnNorm, {D}));
    KILN_ASSIGN(Node* wgate, W(names::kFfnGate, {c.n_ff, D}));
    KILN_ASSIGN(Node* wup, W(names::kFfnUp, {c.n_ff, D}));
    KILN_ASSIGN(Node* wdown, W(names::kFfnDown, {D, c.n_ff}));

    Attrs rope{{"head_dim", hd}, {"n_rot", c.n_rot}, {"theta", c.rope_theta}};
    KILN_ASSIGN(Node* h, g.build(Op::RmsNorm, {x, attn_norm}, Attrs{{"eps", c.rms_eps}}, L + ".attn_norm"));
    KILN_ASSIGN(Node* q, g.build(Op::MatMul, {h, mat(wq)}, {}, L + ".attn_q"));
    KILN_ASSIGN(Node* k, g.build(Op::MatMul, {h, mat(wk)}, {}, L + ".attn_k"));
    KILN_ASSIGN(Node* v, g.build(Op::MatMul, {h, mat(wv)}, {}, L + ".attn_v"));
    std::vector<Node*> rq = {q, pos}, rk = {k, pos};
    if (rope_freqs) rq.push_back(rope_freqs), rk.push_back(rope_freqs);
    KILN_ASSIGN(q, g.build(Op::Rope, rq, rope, L + ".rope_q"));
    KILN_ASSIGN(k, g.build(Op::Rope, rk, rope, L + ".rope_k"));
    if (opts.kv_type != DType::F32 && opts.kv_type != DType::F16)
      return make_error("the KV cache type must be f32 or f16, got {}", dtype_name(opts.kv_type));
    TensorType cache{opts.kv_type, {opts.max_streams, opts.max_context, kvF}};
    Node* kc = g.add(Op::State, {}, cache, Attrs{{"name", fmt::format("kv.{}.k", l)}}, L + ".k_cache");
    Node* vc = g.add(Op::State, {}, cache, Attrs{{"name", fmt::format("kv.{}.v", l)}}, L + ".v_cache");
    KILN_ASSIGN(kc, g.build(Op::KvWrite, {kc, k, pos, streams}, {}, L + ".k_cache"));
    KILN_ASSIGN(vc, g.build(Op::KvWrite, {vc, v, pos, streams}, {}, L + ".v_cache"));
    Attrs att{{"n_head", c.n_head}, {"n_kv_head", c.n_head_kv}, {"head_dim", hd}};
    KILN_ASSIGN(Node* a, g.build(Op::Attention, {q, kc, vc, pos, streams}, att, L + ".attn"));
    KILN_ASSIGN(Node* o, g.build(Op::MatMul, {a, mat(wo)}, {}, L + ".attn_output"));
    KILN_ASSIGN(x, g.build(Op::Add, {x, o}, {}, L + ".attn_residual"));

    KILN_ASSIGN(h, g.build(Op::RmsNorm, {x, ffn_norm}, Attrs{{"eps", c.rms_eps}}, L + ".ffn_norm"));
    KILN_ASSIGN(Node* gate, g.build(Op::MatMul, {h, mat(wgate)}, {}, L + ".ffn_gate"));
    KILN_ASSIGN(Node* up, g.build(Op::MatMul, {h, mat(wup)}, {}, L + ".ffn_up"));
    KILN_ASSIGN(gate, g.build(Op::Silu, {gate}, {}, L + ".ffn_silu"));
    KILN_ASSIGN(Node* m, g.build(Op::Mul, {gate, up}, {}, L + ".ffn_swiglu"));
    KILN_ASSIGN(Node* d, g.build(Op::MatMul, {m, mat(wdown)}, {}, L + ".ffn_down"));
    KILN_ASSIGN(x, g.build(Op::Add, {x, d}, {}, L + ".ffn_residual"));
  }

  KILN_ASSIGN(Node* out_norm, weight(std::string(names::kOutputNorm), {D}));
  KILN_ASSIGN(x, g.build(Op::RmsNorm, {x, out_norm}, Attrs{{"eps", c.rms_eps}}, "output_norm"));
  if (logit_rows) {
    KILN_ASSIGN(x, g.build(Op::GatherRows, {x, logit_rows}, {}, "logit_rows"));
  }
  Node* head = embd;
  if (!c.tied_output) {
    KILN_ASSIGN(head, weight(std::string(names::kOutput), {c.n_vocab, D}));
  }
  KILN_ASSIGN(Node* logits, g.build(Op::MatMul, {x, mat(head)}, {}, "output"));
  KILN_TRY(g.build(Op::Output, {logits}, Attrs{{"name", std::string("logits")}}, "logits"));
  return g;
}

Result<DType> kv_cache_type(std::string_view name) {
  if (name == "f16") return DType::F16;
  if (name == "f32") return DType::F32;
  return make_error("the KV cache type must be f16 or f32, got '{}'", name);
}

Result<Graph> llama_draft_graph(const Graph& step, const std::vector<int64_t>& layers) {
  int64_t n_layer = (int64_t)step.nodes_of(Op::Attention).size();
  std::vector<bool> keep((size_t)n_layer, false);
  for (int64_t l : layers) {
    if (l < 0 || l >= n_layer) return make_error("draft layer {} is not a layer of the model (0..{})", l, n_layer - 1);
    keep[(size_t)l] = true;
  }
  if (layers.empty() || (int64_t)std::count(keep.begin(), keep.end(), true) == n_layer)
    return make_error("a draft runs some but not all of the {} layers", n_layer);
  KILN_ASSIGN(Graph g, clone_graph(step));
  std::map<std::string, Node*, std::less<>> by_loc;
  for (Node* n : g.nodes())
    if (n->op() == Op::Add) by_loc[n->loc()] = n;
  // A skipped layer passes its input through: every use of its output (the FFN residual
  // add) becomes a use of its input (the attention residual add's first operand). In
  // layer order, so runs of skipped layers chain back to the last kept one.
  for (int64_t l = 0; l < n_layer; ++l) {
    if (keep[(size_t)l]) continue;
    auto out = by_loc.find(fmt::format("blk.{}.ffn_residual", l));
    auto mid = by_loc.find(fmt::format("blk.{}.attn_residual", l));
    if (out == by_loc.end() || mid == by_loc.end() || out->second->operand(0) != mid->second)
      return make_error("graph @{}: layer {} is not shaped as build_llama_graph makes it (no {} over {})",
                        step.name(), l, fmt::format("blk.{}.ffn_residual", l), fmt::format("blk.{}.attn_residual", l));
    g.replace_all_uses(out->second, mid->second->operand(0));
  }
  // Keep what the outputs need; skipped layers (their kv_writes too) go.
  std::set<const Node*> live;
  auto nodes = g.nodes();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it)
    if ((*it)->op() == Op::Output || live.count(*it)) {
      live.insert(*it);
      for (const Node* o : (*it)->operands()) live.insert(o);
    }
  g.erase_if([&](const Node* n) { return !live.count(n); });
  return g;
}

Result<Graph> llama_draft_graph(const Graph& step, int64_t layers) {
  int64_t n_layer = (int64_t)step.nodes_of(Op::Attention).size();
  if (layers < 1 || layers >= n_layer)
    return make_error("draft layers {} must be in 1..{} (the model has {} layers)", layers, n_layer - 1, n_layer);
  std::vector<int64_t> first((size_t)layers);
  for (int64_t l = 0; l < layers; ++l) first[(size_t)l] = l;
  return llama_draft_graph(step, first);
}

std::map<std::string, Tensor> single_stream_inputs(const std::vector<int32_t>& tokens,
                                                   int32_t start, int32_t stream) {
  int64_t T = (int64_t)tokens.size();
  std::vector<int32_t> pos((size_t)T);
  for (int64_t i = 0; i < T; ++i) pos[(size_t)i] = start + (int32_t)i;
  return {{"tokens", Tensor::i32_of({T}, tokens)},
          {"positions", Tensor::i32_of({T}, pos)},
          {"streams", Tensor::i32_of({T}, std::vector<int32_t>((size_t)T, stream))},
          {"logit_rows", Tensor::i32_of({1}, {(int32_t)T - 1})}};
}

}  // namespace kiln
