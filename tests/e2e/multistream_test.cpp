// tests/e2e/multistream_test.cpp — several streams in one forward pass.
//
// The equivalence multi-stream decoding promises: S streams decoded together, one step
// per token for all of them, give exactly the tokens of S separate single-stream runs
// (greedy). And a prompt prefilled once and copied to other streams
// (kiln_session_copy_stream) continues exactly as if each stream had prefilled it.
#include <gtest/gtest.h>

#include <filesystem>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "runtime/include/kiln/kiln.h"
#include "runtime/sampler.h"
#include "support/file.h"
#include "tests/e2e/artifacts.h"

namespace kiln {
namespace {
namespace fs = std::filesystem;

constexpr int kStreams = 3;
constexpr int kSteps = 24;

std::unique_ptr<LoadedArtifact> open_session() {
  CompileRequest req = testing::default_model_request("ms");
  req.max_context = 256;
  req.max_streams = kStreams;
  auto a = testing::compile_and_load(req);
  if (a) {
    EXPECT_EQ(kiln_model_max_streams(a->model), kStreams);
  }
  return a;
}

std::vector<int32_t> tokenize(const LoadedArtifact& s, const std::string& text) {
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
  ASSERT_TRUE(s && s->session);
  std::vector<float> logits((size_t)s->n_vocab() * kStreams);
  int32_t zero = 0;

  // Each prompt alone, on stream 0.
  std::vector<std::vector<int32_t>> alone(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
    auto toks = tokenize(*s, kPrompts[i]);
    ASSERT_EQ(kiln_prefill(s->session, toks.data(), (int32_t)toks.size(), 0, logits.data()), KILN_OK);
    for (int step = 0; step < kSteps; ++step) {
      int32_t next = Sampler::argmax({logits.data(), (size_t)s->n_vocab()});
      alone[i].push_back(next);
      ASSERT_EQ(kiln_decode(s->session, &next, &zero, 1, logits.data()), KILN_OK) << kiln_last_error();
    }
  }

  // All prompts together: one decode step advances every stream.
  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  std::vector<std::vector<int32_t>> together(kStreams);
  std::vector<int32_t> next(kStreams), streams = {0, 1, 2};
  for (int i = 0; i < kStreams; ++i) {
    auto toks = tokenize(*s, kPrompts[i]);
    ASSERT_EQ(kiln_prefill(s->session, toks.data(), (int32_t)toks.size(), i, logits.data() + (size_t)i * s->n_vocab()), KILN_OK);
  }
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < kStreams; ++i) {
      next[i] = Sampler::argmax({logits.data() + (size_t)i * s->n_vocab(), (size_t)s->n_vocab()});
      together[i].push_back(next[i]);
    }
    ASSERT_EQ(kiln_decode(s->session, next.data(), streams.data(), kStreams, logits.data()), KILN_OK) << kiln_last_error();
  }
  for (int i = 0; i < kStreams; ++i) EXPECT_EQ(together[i], alone[i]) << "stream " << i << ": " << kPrompts[i];
}

TEST(MultiStream, SharedPromptCopiedToStreamsContinuesExactly) {
  auto s = open_session();
  ASSERT_TRUE(s && s->session);
  auto prefix = tokenize(*s, "Write one sentence about the sea");
  std::vector<std::vector<int32_t>> suffixes = {tokenize(*s, " in a formal tone:"), tokenize(*s, " like a pirate:"),
                                                tokenize(*s, " for a child:")};
  std::vector<float> a((size_t)s->n_vocab()), b((size_t)s->n_vocab());
  // Reference: each stream prefills prefix + suffix itself.
  std::vector<std::vector<float>> ref;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
    std::vector<int32_t> all = prefix;
    all.insert(all.end(), suffixes[i].begin(), suffixes[i].end());
    ASSERT_EQ(kiln_prefill(s->session, all.data(), (int32_t)all.size(), i, a.data()), KILN_OK);
    ref.push_back(a);
  }
  // Shared: prefill the prefix once on stream 0, copy it, then each suffix.
  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  ASSERT_EQ(kiln_prefill(s->session, prefix.data(), (int32_t)prefix.size(), 0, nullptr), KILN_OK);
  for (int i = 1; i < kStreams; ++i)
    ASSERT_EQ(kiln_session_copy_stream(s->session, 0, i, (int32_t)prefix.size()), KILN_OK) << kiln_last_error();
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_EQ(kiln_session_position(s->session, i), (int32_t)prefix.size());
    ASSERT_EQ(kiln_prefill(s->session, suffixes[i].data(), (int32_t)suffixes[i].size(), i, b.data()), KILN_OK);
    EXPECT_EQ(b, ref[i]) << "stream " << i;
  }
  // Bad copies are refused.
  EXPECT_EQ(kiln_session_copy_stream(s->session, 0, 0, 1), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_copy_stream(s->session, 0, 1, 10000), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_copy_stream(s->session, 0, kStreams, 1), KILN_ERR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace kiln
