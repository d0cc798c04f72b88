// tests/e2e/multistream_test.cpp — several streams in one forward pass.
//
// The equivalence multi-stream decoding promises: S streams decoded together, one step
// per token for all of them, give exactly the tokens of S separate single-stream runs
// (greedy). And a prompt prefilled once and copied to other streams
// (kiln_session_copy_stream) continues exactly as if each stream had prefilled it.
#include <gtest/gtest.h>

#include <filesystem>

#include "codegen/compile.h"
#include "codegen/jit.h"
#include "runtime/include/kiln/kiln.h"
#include "runtime/sampler.h"
#include "support/file.h"

namespace kiln {
namespace {
namespace fs = std::filesystem;

constexpr int kStreams = 3;
constexpr int kSteps = 24;

struct Session {
  std::unique_ptr<JitObject> code;
  kiln_model* model = nullptr;
  kiln_session* s = nullptr;
  int32_t V = 0;
  ~Session() {
    if (s) kiln_session_free(s);
    if (model) kiln_model_free(model);
  }
};

std::unique_ptr<Session> open_session() {
  static std::string dir = [] {
    CompileRequest req;
    req.model_path = KILN_DEFAULT_MODEL;
    req.out_dir = (fs::temp_directory_path() / ("kiln-ms-" + std::to_string(::getpid()))).string();
    req.max_context = 256;
    req.max_rows = 32;
    req.max_streams = kStreams;
    req.progress = false;
    auto sum = compile_model(req);
    EXPECT_TRUE(sum.ok()) << sum.error().message;
    return req.out_dir;
  }();
  auto out = std::make_unique<Session>();
  auto obj = read_file(dir + "/model.o");
  auto code = JitObject::load(*obj, "kiln_model_code");
  EXPECT_TRUE(code.ok()) << code.error().message;
  out->code = std::move(code).value();
  EXPECT_EQ(kiln_model_load(out->code->model(), (dir + "/model.kiln").c_str(), &out->model), KILN_OK)
      << kiln_last_error();
  EXPECT_EQ(kiln_model_max_streams(out->model), kStreams);
  EXPECT_EQ(kiln_session_init(out->model, nullptr, &out->s), KILN_OK) << kiln_last_error();
  out->V = kiln_model_n_vocab(out->model);
  return out;
}

std::vector<int32_t> tokenize(const Session& s, const std::string& text) {
  std::vector<int32_t> t(256);
  int32_t n = 0;
  EXPECT_EQ(kiln_tokenize(s.model, text.data(), text.size(), 1, 1, t.data(), (int32_t)t.size(), &n), KILN_OK);
  t.resize((size_t)n);
  return t;
}

const std::vector<std::string> kPrompts = {
    "The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):"};

TEST(MultiStream, StreamsInOnePassEqualSeparateRuns) {
  auto s = open_session();
  ASSERT_TRUE(s && s->s);
  std::vector<float> logits((size_t)s->V * kStreams);
  int32_t zero = 0;

  // Each prompt alone, on stream 0.
  std::vector<std::vector<int32_t>> alone(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_session_reset(s->s, KILN_ALL_STREAMS), KILN_OK);
    auto toks = tokenize(*s, kPrompts[i]);
    ASSERT_EQ(kiln_prefill(s->s, toks.data(), (int32_t)toks.size(), 0, logits.data()), KILN_OK);
    for (int step = 0; step < kSteps; ++step) {
      int32_t next = Sampler::argmax({logits.data(), (size_t)s->V});
      alone[i].push_back(next);
      ASSERT_EQ(kiln_decode(s->s, &next, &zero, 1, logits.data()), KILN_OK) << kiln_last_error();
    }
  }

  // All prompts together: one decode step advances every stream.
  ASSERT_EQ(kiln_session_reset(s->s, KILN_ALL_STREAMS), KILN_OK);
  std::vector<std::vector<int32_t>> together(kStreams);
  std::vector<int32_t> next(kStreams), streams = {0, 1, 2};
  for (int i = 0; i < kStreams; ++i) {
    auto toks = tokenize(*s, kPrompts[i]);
    ASSERT_EQ(kiln_prefill(s->s, toks.data(), (int32_t)toks.size(), i, logits.data() + (size_t)i * s->V), KILN_OK);
  }
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < kStreams; ++i) {
      next[i] = Sampler::argmax({logits.data() + (size_t)i * s->V, (size_t)s->V});
      together[i].push_back(next[i]);
    }
    ASSERT_EQ(kiln_decode(s->s, next.data(), streams.data(), kStreams, logits.data()), KILN_OK) << kiln_last_error();
  }
  for (int i = 0; i < kStreams; ++i) EXPECT_EQ(together[i], alone[i]) << "stream " << i << ": " << kPrompts[i];
}

TEST(MultiStream, SharedPromptCopiedToStreamsContinuesExactly) {
  auto s = open_session();
  ASSERT_TRUE(s && s->s);
  auto prefix = tokenize(*s, "Write one sentence about the sea");
  std::vector<std::vector<int32_t>> suffixes = {tokenize(*s, " in a formal tone:"), tokenize(*s, " like a pirate:"),
                                                tokenize(*s, " for a child:")};
  std::vector<float> a((size_t)s->V), b((size_t)s->V);
  // Reference: each stream prefills prefix + suffix itself.
  std::vector<std::vector<float>> ref;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_session_reset(s->s, KILN_ALL_STREAMS), KILN_OK);
    std::vector<int32_t> all = prefix;
    all.insert(all.end(), suffixes[i].begin(), suffixes[i].end());
    ASSERT_EQ(kiln_prefill(s->s, all.data(), (int32_t)all.size(), i, a.data()), KILN_OK);
    ref.push_back(a);
  }
  // Shared: prefill the prefix once on stream 0, copy it, then each suffix.
  ASSERT_EQ(kiln_session_reset(s->s, KILN_ALL_STREAMS), KILN_OK);
  ASSERT_EQ(kiln_prefill(s->s, prefix.data(), (int32_t)prefix.size(), 0, nullptr), KILN_OK);
  for (int i = 1; i < kStreams; ++i)
    ASSERT_EQ(kiln_session_copy_stream(s->s, 0, i, (int32_t)prefix.size()), KILN_OK) << kiln_last_error();
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_EQ(kiln_session_position(s->s, i), (int32_t)prefix.size());
    ASSERT_EQ(kiln_prefill(s->s, suffixes[i].data(), (int32_t)suffixes[i].size(), i, b.data()), KILN_OK);
    EXPECT_EQ(b, ref[i]) << "stream " << i;
  }
  // Bad copies are refused.
  EXPECT_EQ(kiln_session_copy_stream(s->s, 0, 0, 1), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_copy_stream(s->s, 0, 1, 10000), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_copy_stream(s->s, 0, kStreams, 1), KILN_ERR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace kiln
