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
  // The same suffixes in one call: every stream's rows in one step, the same logits.
  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  ASSERT_EQ(kiln_prefill(s->session, prefix.data(), (int32_t)prefix.size(), 0, nullptr), KILN_OK);
  for (int i = 1; i < kStreams; ++i)
    ASSERT_EQ(kiln_session_copy_stream(s->session, 0, i, (int32_t)prefix.size()), KILN_OK);
  std::vector<const int32_t*> ptrs;
  std::vector<int32_t> lens, ids = {2, 0, 1};  // any order of streams
  for (int32_t id : ids) ptrs.push_back(suffixes[(size_t)id].data()), lens.push_back((int32_t)suffixes[(size_t)id].size());
  std::vector<float> all((size_t)s->n_vocab() * kStreams);
  ASSERT_EQ(kiln_prefill_streams(s->session, ptrs.data(), lens.data(), ids.data(), kStreams, all.data()), KILN_OK)
      << kiln_last_error();
  for (int k = 0; k < kStreams; ++k) {
    EXPECT_EQ(kiln_session_position(s->session, ids[(size_t)k]), (int32_t)(prefix.size() + suffixes[(size_t)ids[(size_t)k]].size()));
    EXPECT_EQ(std::vector<float>(all.begin() + (long)k * s->n_vocab(), all.begin() + (long)(k + 1) * s->n_vocab()),
              ref[(size_t)ids[(size_t)k]])
        << "stream " << ids[(size_t)k];
  }

  // Bad copies are refused.
  EXPECT_EQ(kiln_session_copy_stream(s->session, 0, 0, 1), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_copy_stream(s->session, 0, 1, 10000), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_copy_stream(s->session, 0, kStreams, 1), KILN_ERR_INVALID_ARGUMENT);
}

// A prompt long enough that its KV rows fill whole memory pages, copied to the other
// streams (which then share those pages, runtime/kv_cache.h): the three streams decode
// together exactly as three separate runs do, in a session that shares and in one that
// copies (kiln_session_params.kv_copies). The prompt's owner is then reset and given other
// text, and a sharing stream cut back into the shared rows: the others go on unchanged.
TEST(MultiStream, LongPromptSharedByStreamsDecodesAsSeparateRuns) {
  auto s = open_session();
  ASSERT_TRUE(s && s->session);
  const size_t V = (size_t)s->n_vocab();
  std::string text = "Here is a passage to summarize.";
  for (int i = 0; i < 8; ++i)
    text += " The harbour town woke early: fishing boats slid out past the lighthouse while the bakery on the quay "
            "opened its shutters.";
  const auto prompt = tokenize(*s, text);
  ASSERT_GT(prompt.size(), 150u);
  const std::vector<std::vector<int32_t>> suffixes = {tokenize(*s, " In one sentence:"), tokenize(*s, " As a poem:"),
                                                      tokenize(*s, " For a child:")};
  auto greedy = [&](std::vector<float>& lg, size_t row) {
    return Sampler::argmax({lg.data() + row * V, V});
  };
  // Reference: each stream alone, whole prompt and suffix prefilled, 12 tokens decoded.
  std::vector<std::vector<int32_t>> alone(kStreams);
  std::vector<float> lg(V * kStreams);
  int32_t zero = 0;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), suffixes[(size_t)i].begin(), suffixes[(size_t)i].end());
    ASSERT_EQ(kiln_prefill(s->session, all.data(), (int32_t)all.size(), 0, lg.data()), KILN_OK);
    for (int t = 0; t < 12; ++t) {
      int32_t next = greedy(lg, 0);
      alone[(size_t)i].push_back(next);
      ASSERT_EQ(kiln_decode(s->session, &next, &zero, 1, lg.data()), KILN_OK);
    }
  }
  kiln_session_params copies = kiln_session_default_params();
  copies.kv_copies = 1;
  kiln_session* copying = nullptr;
  ASSERT_EQ(kiln_session_init(s->model, &copies, &copying), KILN_OK) << kiln_last_error();
  std::unique_ptr<kiln_session, void (*)(kiln_session*)> guard(copying, kiln_session_free);
  for (kiln_session* sess : {s->session, copying}) {
    const char* how = sess == copying ? "copies" : "shared pages";
    ASSERT_EQ(kiln_session_reset(sess, KILN_ALL_STREAMS), KILN_OK);
    ASSERT_EQ(kiln_prefill(sess, prompt.data(), (int32_t)prompt.size(), 0, nullptr), KILN_OK);
    for (int i = 1; i < kStreams; ++i) ASSERT_EQ(kiln_session_copy_stream(sess, 0, i, (int32_t)prompt.size()), KILN_OK);
    std::vector<const int32_t*> ptrs;
    std::vector<int32_t> lens, ids = {0, 1, 2};
    for (auto& sfx : suffixes) ptrs.push_back(sfx.data()), lens.push_back((int32_t)sfx.size());
    ASSERT_EQ(kiln_prefill_streams(sess, ptrs.data(), lens.data(), ids.data(), kStreams, lg.data()), KILN_OK);
    std::vector<std::vector<int32_t>> together(kStreams);
    for (int t = 0; t < 12; ++t) {
      std::vector<int32_t> next(kStreams);
      for (int i = 0; i < kStreams; ++i) together[(size_t)i].push_back(next[(size_t)i] = greedy(lg, (size_t)i));
      if (t == 5) {
        // Stream 0 (the prompt's owner) starts over on other text; stream 2 is cut back
        // into the shared rows and given its prompt's end again. Streams 1 and 2 then go
        // on as before (stream 2's next logits recomputed, compared below).
        ASSERT_EQ(kiln_session_reset(sess, 0), KILN_OK);
        auto other = tokenize(*s, "A different text entirely, about mountains.");
        ASSERT_EQ(kiln_prefill(sess, other.data(), (int32_t)other.size(), 0, nullptr), KILN_OK);
        const int32_t held = kiln_session_position(sess, 2);
        std::vector<int32_t> tail(prompt.begin() + 100, prompt.end());
        tail.insert(tail.end(), suffixes[2].begin(), suffixes[2].end());
        tail.insert(tail.end(), together[2].begin(), together[2].end() - 1);
        ASSERT_EQ((int32_t)(100 + tail.size()), held);
        ASSERT_EQ(kiln_session_truncate(sess, 2, 100), KILN_OK);
        ASSERT_EQ(kiln_prefill(sess, tail.data(), (int32_t)tail.size(), 2, nullptr), KILN_OK);
        // Stream 0 goes on with its own text from here: only 1 and 2 are compared.
        std::vector<int32_t> two = {next[1], next[2]}, ids12 = {1, 2};
        ASSERT_EQ(kiln_decode(sess, two.data(), ids12.data(), 2, lg.data() + V), KILN_OK);
        for (int t2 = t + 1; t2 < 12; ++t2) {
          for (int i = 1; i < kStreams; ++i) together[(size_t)i].push_back(two[(size_t)i - 1] = greedy(lg, (size_t)i));
          ASSERT_EQ(kiln_decode(sess, two.data(), ids12.data(), 2, lg.data() + V), KILN_OK);
        }
        break;
      }
      ASSERT_EQ(kiln_decode(sess, next.data(), ids.data(), kStreams, lg.data()), KILN_OK) << kiln_last_error();
    }
    EXPECT_EQ(std::vector<int32_t>(together[0].begin(), together[0].begin() + 6),
              std::vector<int32_t>(alone[0].begin(), alone[0].begin() + 6)) << how;
    EXPECT_EQ(together[1], alone[1]) << how;
    EXPECT_EQ(together[2], alone[2]) << how;
  }
}

// A stream cut back to a prefix (kiln_session_truncate) and given other tokens continues
// exactly as a fresh prefill of the prefix and those tokens: what a chat that re-renders
// its history relies on. The other streams are untouched; bad cuts are refused.
TEST(MultiStream, TruncatedStreamContinuesAsAFreshPrefill) {
  auto s = open_session();
  ASSERT_TRUE(s && s->session);
  const size_t V = (size_t)s->n_vocab();
  auto prefix = tokenize(*s, "The capital of France is");
  auto first = tokenize(*s, " Paris, and the capital of Italy is Rome.");
  auto second = tokenize(*s, " a city on the Seine.");
  std::vector<int32_t> fresh = prefix;
  fresh.insert(fresh.end(), second.begin(), second.end());
  std::vector<float> want(V), got(V), other(V), other_after(V);
  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  ASSERT_EQ(kiln_prefill(s->session, fresh.data(), (int32_t)fresh.size(), 0, want.data()), KILN_OK);

  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  std::vector<int32_t> long_text = prefix;
  long_text.insert(long_text.end(), first.begin(), first.end());
  ASSERT_EQ(kiln_prefill(s->session, long_text.data(), (int32_t)long_text.size(), 1, nullptr), KILN_OK);
  ASSERT_EQ(kiln_session_copy_stream(s->session, 1, 2, (int32_t)long_text.size()), KILN_OK);
  ASSERT_EQ(kiln_session_truncate(s->session, 1, (int32_t)prefix.size()), KILN_OK) << kiln_last_error();
  EXPECT_EQ(kiln_session_position(s->session, 1), (int32_t)prefix.size());
  EXPECT_EQ(kiln_session_position(s->session, 2), (int32_t)long_text.size());
  ASSERT_EQ(kiln_prefill(s->session, second.data(), (int32_t)second.size(), 1, got.data()), KILN_OK);
  EXPECT_EQ(got, want);
  // Stream 2 (a copy of stream 1 before the cut) still holds the whole text: its next
  // token's logits are those of a stream that prefilled it.
  int32_t dot = second.back(), two = 2, zero = 0;
  ASSERT_EQ(kiln_decode(s->session, &dot, &two, 1, other.data()), KILN_OK);
  ASSERT_EQ(kiln_session_reset(s->session, 0), KILN_OK);
  ASSERT_EQ(kiln_prefill(s->session, long_text.data(), (int32_t)long_text.size(), 0, nullptr), KILN_OK);
  ASSERT_EQ(kiln_decode(s->session, &dot, &zero, 1, other_after.data()), KILN_OK);
  EXPECT_EQ(other, other_after);
  // Cutting to the current length keeps everything; to zero empties the stream.
  const int32_t held = kiln_session_position(s->session, 1);
  EXPECT_EQ(kiln_session_truncate(s->session, 1, held), KILN_OK);
  EXPECT_EQ(kiln_session_position(s->session, 1), held);
  EXPECT_EQ(kiln_session_truncate(s->session, 1, 0), KILN_OK);
  EXPECT_EQ(kiln_session_position(s->session, 1), 0);

  EXPECT_EQ(kiln_session_truncate(s->session, 1, 1), KILN_ERR_INVALID_ARGUMENT);  // holds 0
  EXPECT_NE(std::string(kiln_last_error()).find("stream 1 holds 0 tokens, cannot keep 1"), std::string::npos)
      << kiln_last_error();
  EXPECT_EQ(kiln_session_truncate(s->session, 0, -1), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_truncate(s->session, kStreams, 0), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_truncate(nullptr, 0, 0), KILN_ERR_INVALID_ARGUMENT);
}

// Whole prompts of several streams in shared steps, longer together than one step
// (max_rows 32), so a stream's rows span two steps and a step holds several streams: each
// stream's logits are those of its own kiln_prefill, and it decodes on identically. Bad
// arguments are refused with nothing run.
TEST(MultiStream, PrefillOfSeveralStreamsInSharedStepsEqualsSeparatePrefills) {
  auto s = open_session();
  ASSERT_TRUE(s && s->session);
  const size_t V = (size_t)s->n_vocab();
  std::vector<std::vector<int32_t>> prompts;
  for (auto& p : kPrompts) prompts.push_back(tokenize(*s, p + " " + p));
  size_t total = 0;
  for (auto& p : prompts) total += p.size();
  ASSERT_GT(total, 32u) << "the prompts must not fit one step";
  std::vector<float> ref(V * kStreams), got(V * kStreams), next_ref(V * kStreams), next_got(V * kStreams);
  std::vector<int32_t> streams = {0, 1, 2}, lens, next(kStreams);
  std::vector<const int32_t*> ptrs;
  for (auto& p : prompts) ptrs.push_back(p.data()), lens.push_back((int32_t)p.size());

  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  for (int i = 0; i < kStreams; ++i)
    ASSERT_EQ(kiln_prefill(s->session, ptrs[i], lens[i], i, ref.data() + i * V), KILN_OK);
  for (int i = 0; i < kStreams; ++i) next[i] = Sampler::argmax({ref.data() + i * V, V});
  ASSERT_EQ(kiln_decode(s->session, next.data(), streams.data(), kStreams, next_ref.data()), KILN_OK);

  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  ASSERT_EQ(kiln_prefill_streams(s->session, ptrs.data(), lens.data(), streams.data(), kStreams, got.data()), KILN_OK)
      << kiln_last_error();
  EXPECT_EQ(got, ref);
  ASSERT_EQ(kiln_decode(s->session, next.data(), streams.data(), kStreams, next_got.data()), KILN_OK);
  EXPECT_EQ(next_got, next_ref);

  // Refused, nothing run: a stream twice, one out of range, an empty list, a NULL.
  ASSERT_EQ(kiln_session_reset(s->session, KILN_ALL_STREAMS), KILN_OK);
  std::vector<int32_t> twice = {1, 1}, out_of_range = {0, kStreams};
  EXPECT_EQ(kiln_prefill_streams(s->session, ptrs.data(), lens.data(), twice.data(), 2, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("listed twice"), std::string::npos) << kiln_last_error();
  EXPECT_EQ(kiln_prefill_streams(s->session, ptrs.data(), lens.data(), out_of_range.data(), 2, nullptr),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_prefill_streams(s->session, ptrs.data(), lens.data(), streams.data(), 0, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_prefill_streams(s->session, nullptr, lens.data(), streams.data(), 1, nullptr), KILN_ERR_INVALID_ARGUMENT);
  std::vector<int32_t> too_long = {lens[0], 100000};
  EXPECT_EQ(kiln_prefill_streams(s->session, ptrs.data(), too_long.data(), streams.data(), 2, nullptr), KILN_ERR_CONTEXT_FULL);
  for (int i = 0; i < kStreams; ++i) EXPECT_EQ(kiln_session_position(s->session, i), 0) << "stream " << i;
  // After a refusal the marks are cleared: a good call works.
  ASSERT_EQ(kiln_prefill_streams(s->session, ptrs.data(), lens.data(), streams.data(), kStreams, got.data()), KILN_OK)
      << kiln_last_error();
  EXPECT_EQ(got, ref);
}

}  // namespace
}  // namespace kiln
