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
#include "tests/unit/token_goldens.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using testing::TinyLlamaSpec;

// A tiny LLaMA with the byte vocabulary (and two merges, whose unions are tokens as the
// tokenizers library requires) in its metadata, as GGUF bytes.
std::string tiny_with_vocab(TinyLlamaSpec spec) {
  VocabData v = testing::byte_vocab();
  for (const std::string& t : {testing::bytechar('a') + testing::bytechar('b'), testing::bytechar(' ') + testing::bytechar('x')}) {
    v.tokens.push_back(t);
    v.token_types.push_back(1);  // normal
  }
  spec.vocab = (int64_t)v.tokens.size();
  GgufWriter w = testing::tiny_llama_writer(spec);
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
    // The weights stay in the mapped safetensors: the translated GGUF's own bytes hold the
    // metadata and the rope-permuted q and k rows, not the other tensors.
    uint64_t copied = 0, total = 0;
    for (const GgufTensor& t : (*got)->tensors()) {
      total += t.nbytes;
      if (t.name.find("attn_q.") != std::string_view::npos || t.name.find("attn_k.") != std::string_view::npos)
        copied += t.nbytes;
    }
    EXPECT_LT((*got)->file_size(), copied + (total - copied) / 4) << "tensors were copied out of the safetensors";
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
  // One text of one file replaced, and what the error must say. Tensor names in the
  // safetensors header are replaced by names of the same length, so the header stays valid.
  struct TextEdit {
    const char* name;
    const char* file;
    const char *from, *to;
    std::initializer_list<std::string_view> parts;
  };
  const TextEdit text_edits[] = {
      {"qwen", "config.json", R"("model_type":"llama")", R"("model_type":"qwen2")",
       {"config.json", "model_type is \"qwen2\""}},
      {"rope_scaling", "config.json", R"("rope_scaling":null)", R"("rope_scaling":{"rope_type":"linear"})",
       {"config.json", "rope_scaling of type \"linear\""}},
      {"repeated_key", "config.json", R"("model_type":"llama")", R"("model_type":"llama","model_type":"llama")",
       {"config.json", "key 'model_type' appears twice"}},
      {"no_layers", "config.json", R"("num_hidden_layers":2,)", "", {"config.json", "'num_hidden_layers' is missing"}},
      {"pre", "tokenizer.json", R"("individual_digits":true)", R"("individual_digits":false)",
       {"tokenizer.json", "pre_tokenizer"}},
      {"bos", "tokenizer_config.json", R"("bos_token":"<|im_start|>")", R"("bos_token":"<s>")",
       {"tokenizer_config.json", "bos_token \"<s>\" is not in the vocabulary"}},
      {"extra_tensor", "model.safetensors", "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.xx_proj.weight",
       {"model.safetensors", "'model.layers.1.mlp.xx_proj.weight' is not part of a LLaMA model"}},
      // skipped, as old checkpoints' rope tables are
      {"missing_tensor", "model.safetensors", "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.up_pr.inv_freq",
       {"model.layers.1.mlp.up_proj.weight", "is missing"}},
      {"dtype", "model.safetensors", R"("dtype":"F16")", R"("dtype":"I16")",
       {"model.safetensors", "is I16, expected F32, F16 or BF16"}},
  };
  for (const TextEdit& e : text_edits)
    expect_error(error_after(e.name, [&](const std::string& d) { replace_in(d + "/" + e.file, e.from, e.to); }),
                 e.parts);
  expect_error(error_after("no_config", [](const std::string& d) { fs::remove(d + "/config.json"); }),
               {"without config.json"});
  expect_error(error_after("device_config", [](const std::string& d) {  // read forever, once
                 fs::remove(d + "/config.json");
                 fs::create_symlink("/dev/zero", d + "/config.json");
               }),
               {"config.json", "is not a regular file"});
  expect_error(error_after("no_tokenizer", [](const std::string& d) { fs::remove(d + "/tokenizer.json"); }),
               {"tokenizer.json"});
  expect_error(error_after("no_weights", [](const std::string& d) { fs::remove(d + "/model.safetensors"); }),
               {"no model.safetensors"});
  expect_error(error_after("truncated", [](const std::string& d) {
                 const std::string p = d + "/model.safetensors";
                 const std::string s = read(p);
                 write(p, s.substr(0, s.size() - 100));
               }),
               {"model.safetensors"});
  expect_error(error_after("shard_path", [](const std::string& d) {
                 fs::remove(d + "/model.safetensors");
                 write(d + "/model.safetensors.index.json", "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}");
               }),
               {"model.safetensors.index.json", "weight_map['model.norm.weight'] must name a file in the folder"});
}

// --- config.json and tokenizer.json variants, on file contents ---------------------------

// A tokenizer.json of the byte vocabulary (+ "he"), with `pre` as its pre_tokenizer and
// `extra` spliced into the top-level object.
std::string tokenizer_json(const std::string& pre, const std::string& extra = R"("normalizer":null,)",
                           const std::string& merges = "[\"h e\"]") {
  std::string vocab;
  VocabData v = testing::byte_vocab();
  for (size_t i = 3; i < v.tokens.size(); ++i) vocab += fmt::format(",{}:{}", testing::json_str(v.tokens[i]), i);
  vocab += fmt::format(",\"he\":{}", v.tokens.size());
  return fmt::format(R"({{"added_tokens":[{{"id":0,"content":"<|endoftext|>","special":true}},)"
                     R"({{"id":1,"content":"<|im_start|>","special":false}},{{"id":2,"content":"<|im_end|>","special":true}}],)"
                     R"("pre_tokenizer":{},{}"model":{{"type":"BPE","vocab":{{{}}},"merges":{}}}}})",
                     pre, extra, vocab.substr(1), merges);
}
const std::string kDigitsPre =
    R"({"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}]})";
const std::string kGpt2Pre = R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true})";
const std::string kLlama3Pre =
    R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]})";

struct Translated {
  std::string error;
  std::unique_ptr<GgufFile> gguf;
  int64_t n_vocab = 0;
};
Translated translate_tokenizer(const std::string& tok, const std::string& tok_config, const HfConfig& config = {},
                               std::optional<std::string> chat_template = std::nullopt) {
  GgufWriter w;
  Translated t;
  auto n = hf_tokenizer_to_gguf(w, tok, tok_config, chat_template, config, "dir");
  if (!n.ok()) { t.error = n.error().message; return t; }
  t.n_vocab = *n;
  auto g = GgufFile::parse_owned(w.bytes(), "t.gguf");
  if (!g.ok()) { t.error = g.error().message; return t; }
  t.gguf = std::move(g).value();
  return t;
}

TEST(HfCheckpoint, PreTokenizersMapToTheOnesKilnImplements) {
  for (auto [pre, clean, want] : {std::tuple{kDigitsPre, "false", "smollm"}, std::tuple{kDigitsPre, "true", "starcoder"},
                                  std::tuple{kGpt2Pre, "true", "gpt-2"}, std::tuple{kLlama3Pre, "true", "llama-bpe"},
                                  std::tuple{kLlama3Pre, "false", "llama-bpe"}}) {
    Translated t = translate_tokenizer(tokenizer_json(pre), fmt::format(R"({{"clean_up_tokenization_spaces":{}}})", clean));
    ASSERT_TRUE(t.gguf) << want << ": " << t.error;
    auto v = vocab_from_gguf(*t.gguf);
    ASSERT_TRUE(v.ok()) << v.error().message;
    EXPECT_EQ(v->pre, want);
    EXPECT_TRUE(Tokenizer::create(*v).ok()) << want;
  }
  expect_error(translate_tokenizer(tokenizer_json(kGpt2Pre), R"({"clean_up_tokenization_spaces":false})").error,
               {"tokenizer.json", "pre_tokenizer is not one kiln implements"});
  std::string split_removed = kLlama3Pre;
  split_removed.replace(split_removed.find("Isolated"), 8, "Removed");
  expect_error(translate_tokenizer(tokenizer_json(split_removed), "{}").error, {"pre_tokenizer is not one"});
  expect_error(translate_tokenizer(tokenizer_json(kDigitsPre, R"("normalizer":{"type":"NFC"},)"), "{}").error,
               {"tokenizer.json", "normalizer is set"});
}

TEST(HfCheckpoint, TokenizerDetails) {
  // Merges as pairs; an added token not marked special but spelt like one is a control
  // token; special tokens given as {"content": ...}; the template as a named list.
  Translated t = translate_tokenizer(
      tokenizer_json(kDigitsPre, R"("normalizer":null,)", R"([["h","e"]])"),
      R"({"clean_up_tokenization_spaces":false,"bos_token":{"content":"<|im_start|>","lstrip":false},"eos_token":"<|im_end|>",)"
      R"("chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D"}]})");
  ASSERT_TRUE(t.gguf) << t.error;
  auto v = vocab_from_gguf(*t.gguf);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->merges, std::vector<std::string>{"h e"});
  EXPECT_EQ(v->token_types[1], 3) << "<|im_start|> looks special";
  EXPECT_EQ(v->bos, 1);
  EXPECT_EQ(v->eos, 2);
  EXPECT_EQ(*t.gguf->find("tokenizer.chat_template")->as_string(), "D");
  // No tokenizer_config.json: BOS/EOS from config.json's ids, the template from its own
  // file (chat_template.jinja); ids the vocabulary skips and those up to vocab_size pad.
  HfConfig cfg;
  cfg.llama.n_vocab = 300;
  cfg.bos = 0;
  cfg.eos = 2;
  std::string tok = tokenizer_json(kDigitsPre);
  const std::string im_start = R"({"id":1,"content":"<|im_start|>","special":false},)";
  tok.erase(tok.find(im_start), im_start.size());
  Translated u = translate_tokenizer(tok, R"({"clean_up_tokenization_spaces":false})", cfg, std::string("J"));
  ASSERT_TRUE(u.gguf) << u.error;
  EXPECT_EQ(u.n_vocab, 300);
  auto w = vocab_from_gguf(*u.gguf);
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_EQ(w->tokens.size(), 300u);
  EXPECT_EQ(w->tokens[1], "[PAD1]");
  EXPECT_EQ(w->token_types[1], 5);
  EXPECT_EQ(w->tokens[299], "[PAD299]");
  EXPECT_EQ(w->bos, 0);
  EXPECT_EQ(w->eos, 2);
  EXPECT_EQ(*u.gguf->find("tokenizer.chat_template")->as_string(), "J");
  EXPECT_TRUE(Tokenizer::create(*w).ok());
  // What the tokenizers library refuses to load: merges of tokens the vocabulary lacks (or
  // whose union it lacks), merges that are not two tokens, a vocab_size below the ids.
  for (auto [merges, part] : {std::pair{R"(["h x1"])", R"(model.merges[0] "h x1" needs "x1")"},
                              std::pair{R"(["h e","e h"])", R"(model.merges[1] "e h" needs "eh")"},
                              std::pair{R"(["he"])", R"(model.merges[0] "he" is not two tokens)"},
                              std::pair{R"(["h  e"])", "is not two tokens"}})
    expect_error(translate_tokenizer(tokenizer_json(kDigitsPre, R"("normalizer":null,)", merges), "{}").error,
                 {"tokenizer.json", part});
  cfg.llama.n_vocab = 200;
  expect_error(translate_tokenizer(tokenizer_json(kDigitsPre), "{}", cfg).error,
               {"tokenizer.json", "vocab_size 200 is smaller than the vocabulary (token id 259 is \"he\")"});
}

TEST(HfCheckpoint, ConfigDefaultsAndBounds) {
  auto c = hf_config_from_json(
      R"({"model_type":"llama","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4})", "d");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->llama.n_head_kv, 4);  // transformers' LlamaConfig defaults
  EXPECT_EQ(c->llama.n_ctx_train, 2048);
  EXPECT_EQ(c->llama.rope_theta, 10000.0);
  EXPECT_EQ(c->llama.rms_eps, 1e-6);
  EXPECT_FALSE(c->llama.tied_output);
  EXPECT_EQ(c->llama.n_vocab, 0);
  auto err = [](const std::string& json) {
    auto r = hf_config_from_json(json, "d");
    return r.ok() ? std::string("(ok)") : r.error().message;
  };
  const std::string base = R"("model_type":"llama","hidden_size":64,"intermediate_size":96,"num_attention_heads":4)";
  expect_error(err("{" + base + R"(,"num_hidden_layers":1000000000})"), {"config.json", "'num_hidden_layers' must be an integer in 1..1024"});
  expect_error(err("{" + base + R"(,"num_hidden_layers":2,"rope_theta":0.5})"), {"'rope_theta' must be a number"});
  expect_error(err("{" + base + R"(,"num_hidden_layers":2,"attention_bias":"yes"})"), {"'attention_bias' must be true or false"});
  expect_error(err("{" + base + R"(,"num_hidden_layers":2,"num_key_value_heads":3})"), {"do not make whole heads"});
}

TEST(HfCheckpoint, ShapesAndTiesAreCheckedUnderHuggingFaceNames) {
  expect_error(error_after("shape", [](const std::string& d) {
                 replace_in(d + "/model.safetensors", R"(up_proj.weight":{"dtype":"F16","shape":[96,64])",
                            R"(up_proj.weight":{"dtype":"F16","shape":[64,96])");
               }),
               {"model.safetensors", "'model.layers.0.mlp.up_proj.weight' has shape [64, 96], expected [96, 64]"});
  // Untied without an LM head: HF would start one at random; an error here.
  expect_error(error_after("untied", [](const std::string& d) {
                 replace_in(d + "/config.json", R"("tie_word_embeddings":true)", R"("tie_word_embeddings":false)");
               }),
               {"lm_head.weight is missing", "tie_word_embeddings"});
  // Tied with an LM head stored anyway: transformers ties it to the embedding; so does kiln.
  TinyLlamaSpec spec;
  spec.matrix_type = spec.embed_type = DType::F16;
  spec.tied = false;
  Checkpoint c = make_checkpoint("tied_with_head", spec);
  replace_in(c.dir + "/config.json", R"("tie_word_embeddings":false)", R"("tie_word_embeddings":true)");
  auto f = open_model_file(c.dir);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ((*f)->tensor("output.weight"), nullptr);
}

// LLaMA 3.1/3.2's rope_scaling becomes the GGUF's rope_freqs.weight: the high-frequency
// pairs keep their frequency, the lowest ones are slowed by `factor`, those between blend
// (monotonically); the tensor reaches every rope of the graph.
TEST(HfCheckpoint, Llama3RopeScalingBecomesRopeFreqs) {
  auto c = hf_config_from_json(
      R"({"model_type":"llama","hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":2,"num_attention_heads":32,)"
      R"("num_key_value_heads":8,"rope_theta":500000.0,"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,)"
      R"("low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}})", "d");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::vector<float>& f = c->rope_factors;
  ASSERT_EQ(f.size(), 32u);
  EXPECT_EQ(f.front(), 1.0f);
  EXPECT_EQ(f.back(), 32.0f);
  int between = 0;
  for (size_t i = 1; i < f.size(); ++i) {
    EXPECT_GE(f[i], f[i - 1]) << i;
    between += f[i] > 1.0f && f[i] < 32.0f;
  }
  EXPECT_GT(between, 0);
  // A pair's wavelength 2 pi / theta^(-2i/64) against 8192/4 and 8192/1 decides: pair 10
  // (wavelength ~ 380) keeps its frequency, pair 25 (~ 1.8e5) is slowed 32 times.
  EXPECT_EQ(f[10], 1.0f);
  EXPECT_EQ(f[25], 32.0f);
  auto bad = hf_config_from_json(
      R"({"model_type":"llama","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,)"
      R"("rope_scaling":{"rope_type":"yarn","factor":4.0}})", "d");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("rope_scaling of type \"yarn\" is not supported"), std::string::npos);
  auto huge = hf_config_from_json(  // a divisor kiln would store as an infinite float
      R"({"model_type":"llama","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,)"
      R"("rope_scaling":{"rope_type":"llama3","factor":1e300,"low_freq_factor":1,"high_freq_factor":4,)"
      R"("original_max_position_embeddings":64}})", "d");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message.find("rope_scaling.factor must be a positive number up to 1e30, not 1e+300"),
            std::string::npos) << huge.error().message;

  TinyLlamaSpec spec;
  spec.matrix_type = spec.embed_type = DType::F16;
  Checkpoint ck = make_checkpoint("llama3_rope", spec);
  replace_in(ck.dir + "/config.json", R"("rope_scaling":null)",
             R"("rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":64})");
  std::shared_ptr<const GgufFile> g(std::move(open_model_file(ck.dir)).value());
  const GgufTensor* t = g->tensor("rope_freqs.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->elements(), (uint64_t)(spec.embd / spec.heads / 2));
  auto cfg = read_llama_config(*g);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  auto graph = build_llama_graph(g, *cfg, {});
  ASSERT_TRUE(graph.ok()) << graph.error().message;
}

// --- SentencePiece-style tokenizers (LLaMA 2 family) ------------------------------------

// tests/goldens/spm_tokenizer: a SentencePiece BPE model (byte fallback) converted by
// transformers into the tokenizer.json LLaMA 2-family checkpoints carry, and Hugging Face's
// ids for the 351 tokenizer cases (scripts/goldens/make_spm_tokenizer_golden.py). The
// translation to GGUF's "llama" vocabulary (scores from the merge order, byte tokens, the
// space prefix) must tokenize every case as Hugging Face does, and decode as it does.
TEST(HfCheckpoint, SentencePieceStyleTokenizerMatchesHuggingFace) {
  const std::string dir = KILN_SOURCE_DIR "/tests/goldens/spm_tokenizer";
  HfConfig cfg;
  cfg.llama.n_vocab = 2000;
  Translated t = translate_tokenizer(read(dir + "/tokenizer.json"), read(dir + "/tokenizer_config.json"), cfg);
  ASSERT_TRUE(t.gguf) << t.error;
  auto v = vocab_from_gguf(*t.gguf);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->model, "llama");
  EXPECT_TRUE(v->add_space_prefix);
  EXPECT_TRUE(v->add_bos);
  EXPECT_EQ(v->bos, 1);
  EXPECT_EQ(v->eos, 2);
  EXPECT_EQ(v->unk, 0);
  EXPECT_EQ(v->token_types[3], 6) << v->tokens[3] << " is a byte token";
  auto tok = Tokenizer::create(*v);
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  const auto cases = testing::read_token_goldens(dir + "/spm_tokenizer.golden");
  ASSERT_EQ(cases.size(), 351u);
  int encoded = 0, decoded = 0;
  for (const auto& c : cases) {
    const auto ids = tok->encode(c.text, false, c.parse_special);
    encoded += ids == c.ids;
    EXPECT_EQ(ids, c.ids) << "spm_tokenizer.golden:" << c.line << ": encode of " << testing::to_hex(c.text);
    const std::string text = tok->decode(c.ids, /*render_special=*/true);
    decoded += text == c.decoded;
    EXPECT_EQ(testing::to_hex(text), testing::to_hex(c.decoded)) << "spm_tokenizer.golden:" << c.line << ": decode";
  }
  std::printf("SentencePiece-style tokenizer.json: %d/%zu encoded, %d decoded as Hugging Face does\n", encoded,
              cases.size(), decoded);
  EXPECT_EQ(tok->encode("Hello world", true, false).front(), 1) << "BOS first";
}

TEST(HfCheckpoint, SentencePieceStyleNormalizersAreCheckedByForm) {
  const std::string dir = KILN_SOURCE_DIR "/tests/goldens/spm_tokenizer";
  const std::string tok = read(dir + "/tokenizer.json"), cfg = read(dir + "/tokenizer_config.json");
  const std::string legacy = R"("normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},)"
                             R"({"type":"Replace","pattern":{"String":" "},"content":"▁"}]},"pre_tokenizer":null)";
  ASSERT_NE(tok.find(legacy), std::string::npos) << "the converter's legacy form";
  auto with = [&](const std::string& norm_pre) {
    std::string t = tok;
    t.replace(t.find(legacy), legacy.size(), norm_pre);
    return translate_tokenizer(t, cfg);
  };
  auto prefix_of = [](const Translated& t) {
    auto v = vocab_from_gguf(*t.gguf);
    return v.ok() && v->add_space_prefix;
  };
  // Without the Prepend: no space prefix; a Metaspace pre-tokenizer that neither prepends
  // nor splits is the same. Metaspace's other forms tokenize differently (it prepends only
  // where a segment does not start with a space, and splits at every "▁"): refused.
  Translated no_prepend = with(R"("normalizer":{"type":"Replace","pattern":{"String":" "},"content":"▁"},"pre_tokenizer":null)");
  ASSERT_TRUE(no_prepend.gguf) << no_prepend.error;
  EXPECT_FALSE(prefix_of(no_prepend));
  Translated never = with(R"("normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"never","split":false})");
  ASSERT_TRUE(never.gguf) << never.error;
  EXPECT_FALSE(prefix_of(never));
  for (const char* bad : {
           R"("normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":false})",
           R"("normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"never","split":true})",
           R"("normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","add_prefix_space":true})",
           R"("normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false})",
           R"("normalizer":{"type":"NFKC"},"pre_tokenizer":null)",
           R"("normalizer":{"type":"Replace","pattern":{"String":" "},"content":"_"},"pre_tokenizer":null)",
           R"("normalizer":null,"pre_tokenizer":null)"})
    expect_error(with(bad).error, {"tokenizer.json", "SentencePiece-style tokenizer (byte_fallback)", "prepend_scheme"});
}

}  // namespace
}  // namespace kiln
