// tests/e2e/hf_spm_test.cpp — a LLaMA 2-style Hugging Face checkpoint folder, end to end.
//
// No such checkpoint is reachable here, so one is made: a tiny random LLaMA of 2000 tokens
// written out as a folder (tests/hf_export.h) with the SentencePiece-style tokenizer files
// of tests/goldens/spm_tokenizer (transformers' conversion of a SentencePiece BPE, as LLaMA
// 2's own). Compiled, the artifact's tokenizer (model.kiln, read through the C API as an
// app reads it) must encode the 351 tokenizer cases as Hugging Face's tokenizer does, and
// the model must run on them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "frontend/gguf.h"
#include "runtime/include/kiln/kiln.h"
#include "tests/e2e/artifacts.h"
#include "tests/hf_export.h"
#include "tests/unit/tiny_model.h"
#include "tests/unit/token_goldens.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

TEST(HfSentencePiece, CheckpointCompilesAndTokenizesAsHuggingFace) {
  const std::string golden = KILN_SOURCE_DIR "/tests/goldens/spm_tokenizer";
  testing::TinyLlamaSpec spec;
  spec.vocab = 2000;
  spec.matrix_type = spec.embed_type = DType::F32;
  GgufWriter w = testing::tiny_llama_writer(spec);
  // A placeholder vocabulary for the export; the folder's tokenizer files replace it.
  std::vector<std::string> tokens;
  for (int i = 0; i < spec.vocab; ++i) tokens.push_back(fmt::format("t{}", i));
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "smollm");
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_i32s("tokenizer.ggml.token_type", std::vector<int32_t>(tokens.size(), 1));
  w.add_strings("tokenizer.ggml.merges", {});
  auto g = GgufFile::parse_owned(w.bytes(), "tiny.gguf");
  ASSERT_TRUE(g.ok()) << g.error().message;
  const std::string dir = testing::process_temp_path("hf-spm");
  ASSERT_TRUE(testing::export_hf(**g, dir).ok());
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(golden + "/" + name, dir + "/" + name, fs::copy_options::overwrite_existing);

  CompileRequest req = testing::default_model_request("hf-spm");
  req.model_path = dir;
  req.max_context = 256;
  req.max_rows = 256;
  auto a = testing::compile_and_load(req);
  ASSERT_TRUE(a && a->session);
  const auto cases = testing::read_token_goldens(golden + "/spm_tokenizer.golden");
  ASSERT_EQ(cases.size(), 351u);
  std::vector<int32_t> ids(512);
  std::vector<float> logits((size_t)spec.vocab);
  int same = 0;
  for (const auto& c : cases) {
    int32_t n = 0;
    ASSERT_EQ(kiln_tokenize(a->model, c.text.data(), c.text.size(), 0, c.parse_special, ids.data(), (int32_t)ids.size(), &n),
              KILN_OK) << kiln_last_error();
    const std::vector<int32_t> got(ids.begin(), ids.begin() + n);
    same += got == c.ids;
    EXPECT_EQ(got, c.ids) << "spm_tokenizer.golden:" << c.line << ": " << testing::to_hex(c.text);
    if (n == 0 || n > 200) continue;
    ASSERT_EQ(kiln_session_reset(a->session, 0), KILN_OK);
    ASSERT_EQ(kiln_prefill(a->session, got.data(), n, 0, logits.data()), KILN_OK) << kiln_last_error();
  }
  std::printf("compiled LLaMA 2-style checkpoint: %d/%zu cases tokenized as Hugging Face does\n", same, cases.size());
  // With BOS, as the checkpoint's tokenizer_config.json asks.
  int32_t n = 0;
  ASSERT_EQ(kiln_tokenize(a->model, "Hello", 5, 1, 0, ids.data(), (int32_t)ids.size(), &n), KILN_OK);
  ASSERT_GT(n, 1);
  EXPECT_EQ(ids[0], 1);
}

}  // namespace
}  // namespace kiln
