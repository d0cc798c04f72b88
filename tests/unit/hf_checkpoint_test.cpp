// Hugging Face checkpoint folders (frontend/hf_checkpoint.h): a tiny GGUF LLaMA written out
// as a checkpoint (tests/hf_export.h) and read back must give the same tensors, bytes and
// tokenizer; the q/k rows the importer permutes must match llama.cpp's converter (written
// independently in merged_model.h); bad folders give errors naming the file and key or
// tensor. tests/e2e/hf_checkpoint.sh does the same with the default model end to end.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "frontend/hf_checkpoint.h"
#include "frontend/llama.h"
#include "frontend/tokenizer.h"
#include "ir/interpreter.h"
#include "tests/hf_export.h"
#include "tests/temp_folder.h"
#include "tests/unit/byte_vocab.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using testing::TinyLlamaSpec;

// A tiny LLaMA with the byte vocabulary (and two merges) in its metadata, as GGUF bytes.
std::string tiny_with_vocab(const TinyLlamaSpec& spec) {
  GgufWriter w = testing::tiny_llama_writer(spec);
  VocabData v = testing::byte_vocab();
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "smollm");
  w.add_strings("tokenizer.ggml.tokens", v.tokens);
  w.add_i32s("tokenizer.ggml.token_type", v.token_types);
  w.add_strings("tokenizer.ggml.merges", {testing::bytechar('a') + " " + testing::bytechar('b'),
                                          testing::bytechar(' ') + " " + testing::bytechar('x')});
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_u32("tokenizer.ggml.padding_token_id", 2);
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_string("tokenizer.chat_template", "{% for message in messages %}<|im_start|>{{ message['content'] }}\n{% endfor %}");
  return w.bytes();
}

struct Checkpoint {
  std::unique_ptr<GgufFile> gguf;  // the source
  std::string dir;                 // its export
};

Checkpoint make_checkpoint(const std::string& name, const TinyLlamaSpec& spec, bool shard = false) {
  Checkpoint c;
  auto g = GgufFile::parse_owned(tiny_with_vocab(spec), name + ".gguf");
  EXPECT_TRUE(g.ok()) << g.error().message;
  c.gguf = std::move(*g);
  c.dir = testing::process_temp_path(name);
  testing::HfExportOptions o;
  o.shard = shard;
  auto s = testing::export_hf(*c.gguf, c.dir, o);
  EXPECT_TRUE(s.ok()) << s.error().message;
  return c;
}

void expect_same_model(const GgufFile& want, const GgufFile& got) {
  ASSERT_EQ(want.tensors().size(), got.tensors().size());
  for (const GgufTensor& t : want.tensors()) {
    const GgufTensor* u = got.tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->type, t.type) << t.name;
    EXPECT_EQ(u->ne, t.ne) << t.name;
    ASSERT_EQ(u->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(0, std::memcmp(u->data, t.data, t.nbytes)) << t.name;
  }
  auto a = read_llama_config(want), b = read_llama_config(got);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->n_embd, b->n_embd);
  EXPECT_EQ(a->n_head_kv, b->n_head_kv);
  EXPECT_EQ(a->rope_theta, b->rope_theta);
  EXPECT_EQ((float)a->rms_eps, (float)b->rms_eps);
  EXPECT_EQ(a->tied_output, b->tied_output);
  auto va = vocab_from_gguf(want), vb = vocab_from_gguf(got);
  ASSERT_TRUE(va.ok()) << va.error().message;
  ASSERT_TRUE(vb.ok()) << vb.error().message;
  EXPECT_EQ(va->tokens, vb->tokens);
  EXPECT_EQ(va->token_types, vb->token_types);
  EXPECT_EQ(va->merges, vb->merges);
  EXPECT_EQ(va->pre, vb->pre);
  EXPECT_EQ(va->bos, vb->bos);
  EXPECT_EQ(va->eos, vb->eos);
  EXPECT_EQ(va->pad, vb->pad);
  EXPECT_EQ(va->add_bos, vb->add_bos);
  ASSERT_NE(got.find("tokenizer.chat_template"), nullptr);
  EXPECT_EQ(*want.find("tokenizer.chat_template")->as_string(), *got.find("tokenizer.chat_template")->as_string());
}

TEST(HfCheckpoint, FloatTensorsRoundTripByteForByte) {
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    TinyLlamaSpec spec;
    spec.matrix_type = t;
    spec.embed_type = t;
    spec.tied = t != DType::F16;
    Checkpoint c = make_checkpoint(std::string("float_") + std::string(dtype_name(t)), spec);
    auto got = open_model_file(c.dir);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ((*got)->path(), c.dir);
    expect_same_model(*c.gguf, **got);
  }
}

TEST(HfCheckpoint, ShardedCheckpointReadsThroughItsIndex) {
  TinyLlamaSpec spec;
  spec.matrix_type = spec.embed_type = DType::F16;
  Checkpoint c = make_checkpoint("sharded", spec, /*shard=*/true);
  ASSERT_TRUE(fs::exists(c.dir + "/model.safetensors.index.json"));
  ASSERT_FALSE(fs::exists(c.dir + "/model.safetensors"));
  auto got = open_model_file(c.dir);
  ASSERT_TRUE(got.ok()) << got.error().message;
  expect_same_model(*c.gguf, **got);
}

// q_proj / k_proj as Hugging Face stores them become what llama.cpp's converter writes:
// the export's inverse permutation undone by the importer, checked here against the
// converter's reshape written independently (merged_model.h), not against the export.
TEST(HfCheckpoint, QkRowsArePermutedAsLlamaCppsConverterDoes) {
  TinyLlamaSpec spec;
  spec.matrix_type = DType::F32;
  Checkpoint c = make_checkpoint("permute", spec);
  auto st = SafetensorsFile::open(c.dir + "/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto got = open_model_file(c.dir);
  ASSERT_TRUE(got.ok());
  for (auto [hf, gguf, heads] : {std::tuple{"model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight", spec.heads},
                                 std::tuple{"model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight", spec.kv_heads}}) {
    const StTensor* t = (*st)->tensor(hf);
    ASSERT_NE(t, nullptr) << hf;
    auto hf_rows = (*st)->to_f32(*t);
    ASSERT_TRUE(hf_rows.ok());
    const std::vector<float> want = testing::permute_like_converter(*hf_rows, t->shape[0], t->shape[1], heads);
    const std::vector<float> imported = testing::gguf_tensor_f32(*(*got)->tensor(gguf));
    EXPECT_EQ(want, imported) << gguf;
    EXPECT_NE(*hf_rows, imported) << "the rows should have moved";
  }
}

// A quantized GGUF exports as its dequantized F32 values; the graph built from the folder
// computes the same logits as the one built from the GGUF (reference interpreter).
TEST(HfCheckpoint, QuantizedSourceGivesTheSameLogits) {
  Checkpoint c = make_checkpoint("quantized", TinyLlamaSpec{});
  auto hf = open_model_file(c.dir);
  ASSERT_TRUE(hf.ok()) << hf.error().message;
  std::shared_ptr<const GgufFile> a(std::move(c.gguf)), b(std::move(*hf));
  std::vector<std::vector<float>> logits;
  for (const auto& f : {a, b}) {
    auto cfg = read_llama_config(*f);
    ASSERT_TRUE(cfg.ok());
    LlamaBuildOptions o;
    o.max_context = 16;
    auto g = build_llama_graph(f, *cfg, o);
    ASSERT_TRUE(g.ok()) << g.error().message;
    Interpreter in(*g);
    auto out = in.run(single_stream_inputs({5, 17, 42, 3}, 0));
    ASSERT_TRUE(out.ok()) << out.error().message;
    logits.push_back(out->at("logits").f32);
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < logits[0].size(); ++i) EXPECT_NEAR(logits[0][i], logits[1][i], 1e-5f) << i;
}

// --- bad folders ---------------------------------------------------------------------------

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }
std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The error of opening the checkpoint after `edit` changed a fresh copy of it.
template <class Edit>
std::string error_after(const std::string& name, Edit edit) {
  static const Checkpoint base = make_checkpoint("bad_base", TinyLlamaSpec{.matrix_type = DType::F16});
  const std::string dir = testing::process_temp_path(name);
  fs::remove_all(dir);
  fs::copy(base.dir, dir);
  edit(dir);
  auto f = open_model_file(dir);
  return f.ok() ? std::string("(opened)") : f.error().message;
}

void replace_in(const std::string& path, const std::string& from, const std::string& to) {
  std::string s = read(path);
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from << " in " << path;
  write(path, s.replace(at, from.size(), to));
}

// msg contains every one of parts.
void expect_error(const std::string& msg, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

TEST(HfCheckpoint, BadFoldersNameTheFileAndWhatWasExpected) {
  expect_error(error_after("no_config", [](const std::string& d) { fs::remove(d + "/config.json"); }),
               {"without config.json"});
  expect_error(error_after("qwen", [](const std::string& d) {
                 replace_in(d + "/config.json", "\"model_type\":\"llama\"", "\"model_type\":\"qwen2\"");
               }),
               {"config.json", "model_type is \"qwen2\""});
  expect_error(error_after("rope_scaling", [](const std::string& d) {
                 replace_in(d + "/config.json", "\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"llama3\"}");
               }),
               {"config.json", "rope_scaling"});
  expect_error(error_after("no_layers", [](const std::string& d) {
                 replace_in(d + "/config.json", "\"num_hidden_layers\":2,", "");
               }),
               {"config.json", "'num_hidden_layers' is missing"});
  expect_error(error_after("no_tokenizer", [](const std::string& d) { fs::remove(d + "/tokenizer.json"); }),
               {"tokenizer.json"});
  expect_error(error_after("pre", [](const std::string& d) {
                 replace_in(d + "/tokenizer.json", "\"individual_digits\":true", "\"individual_digits\":false");
               }),
               {"tokenizer.json", "pre_tokenizer"});
  expect_error(error_after("bos", [](const std::string& d) {
                 replace_in(d + "/tokenizer_config.json", "\"bos_token\":\"<|im_start|>\"", "\"bos_token\":\"<s>\"");
               }),
               {"tokenizer_config.json", "bos_token \"<s>\" is not in the vocabulary"});
  expect_error(error_after("no_weights", [](const std::string& d) { fs::remove(d + "/model.safetensors"); }),
               {"no model.safetensors"});
  expect_error(error_after("truncated", [](const std::string& d) {
                 const std::string p = d + "/model.safetensors";
                 const std::string s = read(p);
                 write(p, s.substr(0, s.size() - 100));
               }),
               {"model.safetensors"});
  // Tensor names are replaced by names of the same length, so the header stays valid.
  expect_error(error_after("extra_tensor", [](const std::string& d) {
                 replace_in(d + "/model.safetensors", "model.layers.1.mlp.up_proj.weight",
                            "model.layers.1.mlp.xx_proj.weight");
               }),
               {"model.safetensors", "'model.layers.1.mlp.xx_proj.weight' is not part of a LLaMA model"});
  expect_error(error_after("missing_tensor", [](const std::string& d) {
                 replace_in(d + "/model.safetensors", "model.layers.1.mlp.up_proj.weight",
                            "model.layers.1.mlp.up_pr.inv_freq");  // skipped, as old checkpoints' rope tables
               }),
               {"model.layers.1.mlp.up_proj.weight", "is missing"});
  expect_error(error_after("dtype", [](const std::string& d) {
                 replace_in(d + "/model.safetensors", "\"dtype\":\"F16\"", "\"dtype\":\"I16\"");
               }),
               {"model.safetensors", "is I16, expected F32, F16 or BF16"});
  expect_error(error_after("shard_path", [](const std::string& d) {
                 fs::remove(d + "/model.safetensors");
                 write(d + "/model.safetensors.index.json", "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}");
               }),
               {"model.safetensors.index.json", "weight_map['model.norm.weight'] must name a file in the folder"});
}

}  // namespace
}  // namespace kiln
