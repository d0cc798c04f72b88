// frontend/llama.h — LLaMA hyperparameters from GGUF and the lowering into graph IR.
#pragma once

#include <algorithm>
#include <memory>
#include <string>

#include "frontend/gguf.h"
#include "ir/graph.h"
#include "ir/interpreter.h"
#include "support/result.h"

namespace kiln {

struct LlamaConfig {
  std::string arch;        // "llama"
  std::string name;        // general.name, for messages and the graph name
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  int64_t n_rot = 0;
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  bool tied_output = false;  // LM head reuses token_embd.weight
};

// Reads and sanity-checks the hyperparameters; errors name the file and key.
Result<LlamaConfig> read_llama_config(const GgufFile& f);

// The KV cache element type named by `name` ("f16" or "f32", as --kv-type takes it).
Result<DType> kv_cache_type(std::string_view name);

struct LlamaBuildOptions {
  int64_t max_context = 2048;    // KV cache rows per stream
  int64_t max_streams = 1;       // independent sequences sharing one forward pass
  bool all_logits = false;       // logits for every row instead of the rows in logit_rows
  DType kv_type = DType::F16;    // KV cache elements: f16 (half the bytes; llama.cpp's default
                                 // too) or f32. Attention reads every cached row each step.
};

// The GGUF file as a weight source: tensor shapes in logical [rows, cols] order.
class GgufWeights final : public WeightSource {
 public:
  explicit GgufWeights(std::shared_ptr<const GgufFile> f) : f_(std::move(f)) {}
  std::optional<WeightView> find(std::string_view name) const override;
  std::string describe() const override { return f_->path(); }
  const GgufFile& file() const { return *f_; }

 private:
  std::shared_ptr<const GgufFile> f_;
};

class GgufWriter;
// Writes general.architecture/name and the {arch}.* hyperparameters of `c` (the inverse
// of read_llama_config; tests build small models with it).
void write_llama_config(GgufWriter& w, const LlamaConfig& c);

// Logical [rows, cols] shape of a GGUF tensor (GGUF lists the contiguous dimension first).
std::vector<int64_t> logical_shape(const GgufTensor& t);

// Lowers the model into one step graph over T rows (tokens). Inputs: tokens[T],
// positions[T], streams[T] (which sequence each row extends) and, unless all_logits,
// logit_rows[R] (the rows whose logits are wanted: the last prompt token in a prefill,
// every row in a decode). State: kv.<layer>.k / kv.<layer>.v, each [S, C, F]. Output:
// "logits" [R, vocab]. Every tensor's presence, dtype and shape is checked; errors name
// the tensor and the expected shape.
Result<Graph> build_llama_graph(std::shared_ptr<const GgufFile> f, const LlamaConfig& cfg,
                                const LlamaBuildOptions& opts);

// The early-exit draft of a step graph (DS2D self-drafting): the first `layers` decoder
// layers, then the shared final norm and LM head — the same nodes, weights and KV state
// buffers, so the draft writes the KV of those layers where the step would. Works on
// any graph build_llama_graph made, also after passes (it finds the nodes by location:
// "blk.{layers-1}.ffn_residual" feeds "output_norm"); nodes of later layers are dropped.
// The result keeps the input's attributes (a planned graph needs plan-memory again).
Result<Graph> llama_draft_graph(const Graph& step, int64_t layers);
// The draft that runs only `layers` (any proper subset, e.g. with middle layers skipped,
// as in Draft & Verify): a skipped layer passes its input on unchanged and writes no KV.
Result<Graph> llama_draft_graph(const Graph& step, const std::vector<int64_t>& layers);
// The default draft depth: a quarter of the layers (at least 1); none for a one-layer model.
inline int64_t default_draft_layers(int64_t n_layer) {
  return n_layer >= 2 ? std::max<int64_t>(1, n_layer / 4) : 0;  // a draft must skip a layer
}

// Interpreter inputs for one step of one stream: `tokens` at positions start, start+1, ...
// of `stream`; logits for the last row (or, for a graph built with all_logits, every row).
std::map<std::string, Tensor> single_stream_inputs(const std::vector<int32_t>& tokens,
                                                   int32_t start, int32_t stream = 0);

}  // namespace kiln
