// tests/unit/kv_cache_test.cpp — the KV cache's shared prompt pages (runtime/kv_cache.h).
//
// A cache of 4 streams, each two blocks (K and V of one layer) of 64 rows of 256 bytes, so
// a page holds 16 rows. Every check is on the bytes each stream shows, which are what the
// compiled code reads: after a copy, dst shows src's rows; whatever either stream does
// afterwards below its own rows (reset, truncation, a copy into it) leaves the other's rows
// as they were. That the whole pages are shared rather than copied shows by writing through
// the owner's address (which no real writer does below a stream's position) and reading
// it through the other stream's.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "runtime/kv_cache.h"

namespace kiln::rt {
namespace {

constexpr int32_t kStreams = 4, kRows = 64;
constexpr uint64_t kRowBytes = 256;
const uint64_t kPage = (uint64_t)sysconf(_SC_PAGESIZE);

struct Cache {
  KvCache kv;
  std::vector<kiln_kv_block> blocks = {{0, kRowBytes}, {kRows * kRowBytes, kRowBytes}};
  uint64_t stream_bytes = 2 * kRows * kRowBytes;
  explicit Cache(bool share) {
    EXPECT_TRUE(kv.allocate(stream_bytes, kStreams, blocks, share));
  }
  uint8_t* row(int32_t s, size_t block, int32_t r) {
    return kv.data() + s * stream_bytes + blocks[block].offset + (uint64_t)r * kRowBytes;
  }
  // Rows [0, n) of stream s filled with a pattern of (tag, block, row).
  void fill(int32_t s, int32_t n, uint8_t tag) {
    for (size_t b = 0; b < blocks.size(); ++b)
      for (int32_t r = 0; r < n; ++r) std::memset(row(s, b, r), (uint8_t)(tag + 7 * b + 3 * r), kRowBytes);
  }
  // Whether rows [0, n) of s hold fill(_, n, tag)'s pattern, and rows [n, kRows) zeros.
  bool holds(int32_t s, int32_t n, uint8_t tag) {
    for (size_t b = 0; b < blocks.size(); ++b)
      for (int32_t r = 0; r < kRows; ++r) {
        const uint8_t want = r < n ? (uint8_t)(tag + 7 * b + 3 * r) : 0;
        for (uint64_t i = 0; i < kRowBytes; ++i)
          if (row(s, b, r)[i] != want) return false;
      }
    return true;
  }
};

// A shared cache is not inherited by a fork()ed child (MADV_DONTFORK), so its range is
// free there; whatever the child maps into it afterwards must survive the parent's cache
// being destroyed in the child (kiln_session_free there).
TEST(KvCache, DestroyedInAForkedChildLeavesTheChildsMemory) {
  if ((2 * kRows * kRowBytes) % kPage != 0) GTEST_SKIP() << "a stream is not a whole number of pages here";
  auto c = std::make_unique<Cache>(true);
  ASSERT_TRUE(c->kv.sharing()) << "no memfd here";
  uint8_t* const at = c->kv.data();
  const size_t bytes = (size_t)(c->stream_bytes * kStreams);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    void* mine = mmap(at, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (mine != at) _exit(2);  // the range was inherited after all: nothing to test
    static_cast<volatile uint8_t*>(mine)[0] = 42;
    c.reset();
    _exit(static_cast<volatile uint8_t*>(mine)[0] == 42 ? 0 : 1);  // SIGSEGV if unmapped
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) GTEST_SKIP() << "the cache was inherited (no MADV_DONTFORK)";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

TEST(KvCache, CopiedRowsShareWholePagesAndReadTheSame) {
  if ((2 * kRows * kRowBytes) % kPage != 0) GTEST_SKIP() << "a stream is not a whole number of pages here";
  Cache c(true);
  ASSERT_TRUE(c.kv.sharing()) << "no memfd here";
  c.fill(0, 40, 1);
  const uint64_t one = c.kv.resident_bytes();
  EXPECT_GE(one, 2 * 40 * kRowBytes);
  c.kv.copy_rows(0, 1, 40);
  c.kv.copy_rows(0, 2, 40);
  c.kv.copy_rows(0, 3, 40);
  // Four streams of the 40 rows hold them once, plus each copy's partial last pages.
  // (Measured first: reading a page never written, as holds() does, gives it memory.)
  EXPECT_LE(c.kv.resident_bytes(), one + 3 * 2 * kPage);
  EXPECT_TRUE(c.holds(1, 40, 1));
  EXPECT_TRUE(c.holds(0, 40, 1));
  const int32_t per_page = (int32_t)(kPage / kRowBytes);
  EXPECT_EQ(c.kv.shared_rows(1), 40);
  // A byte written through stream 0's first page shows in stream 1's: the same memory.
  c.row(0, 0, 0)[5] ^= 0xff;
  EXPECT_EQ(c.row(1, 0, 0)[5], c.row(0, 0, 0)[5]);
  c.row(0, 0, 0)[5] ^= 0xff;
  // The partial page at the end of the rows is stream 1's own: rows past 40 written by
  // stream 1 (its next tokens) do not show in stream 0.
  if (40 % per_page != 0) {
    std::memset(c.row(1, 0, 40), 0x5a, kRowBytes);
    EXPECT_EQ(c.row(0, 0, 40)[0], 0);
    std::memset(c.row(1, 0, 40), 0, kRowBytes);
  }
}

TEST(KvCache, AResetOrTruncatedOwnerLeavesTheOthersRows) {
  Cache c(true);
  c.fill(0, 50, 1);
  c.kv.copy_rows(0, 1, 50);
  c.kv.copy_rows(0, 2, 30);
  c.kv.zero_rows(0, 0, 50);  // reset
  EXPECT_TRUE(c.holds(0, 0, 0));
  EXPECT_TRUE(c.holds(1, 50, 1));
  EXPECT_TRUE(c.holds(2, 30, 1));
  EXPECT_EQ(c.kv.shared_rows(1), 0);
  EXPECT_EQ(c.kv.shared_rows(2), 0);
  // The owner fills again; the others keep what they had.
  c.fill(0, 20, 9);
  EXPECT_TRUE(c.holds(1, 50, 1));

  Cache d(true);
  d.fill(0, 50, 1);
  d.kv.copy_rows(0, 1, 50);
  d.kv.zero_rows(0, 20, 50);  // the owner truncated to 20 rows
  for (size_t b = 0; b < 2; ++b)
    for (int32_t r = 0; r < 20; ++r) EXPECT_EQ(d.row(0, b, r)[0], (uint8_t)(1 + 7 * b + 3 * r));
  for (int32_t r = 20; r < kRows; ++r) EXPECT_EQ(d.row(0, 0, r)[0], 0);
  EXPECT_TRUE(d.holds(1, 50, 1));
}

TEST(KvCache, ATruncatedCopyKeepsItsRowsAndLeavesTheOwners) {
  Cache c(true);
  c.fill(0, 60, 1);
  c.kv.copy_rows(0, 1, 60);
  c.kv.zero_rows(1, 10, 60);  // stream 1 cut into the shared pages
  EXPECT_EQ(c.kv.shared_rows(1), 0);
  for (size_t b = 0; b < 2; ++b)
    for (int32_t r = 0; r < kRows; ++r) EXPECT_EQ(c.row(1, b, r)[0], r < 10 ? (uint8_t)(1 + 7 * b + 3 * r) : 0);
  EXPECT_TRUE(c.holds(0, 60, 1));
  // Cut above the shared rows: nothing to unshare.
  c.kv.copy_rows(0, 2, 33);
  const int32_t shared = c.kv.shared_rows(2);
  c.kv.zero_rows(2, 33, 33);
  EXPECT_EQ(c.kv.shared_rows(2), shared);
  EXPECT_TRUE(c.holds(2, 33, 1));
}

TEST(KvCache, CopiesOfCopiesAndCopiesIntoAnOwner) {
  Cache c(true);
  c.fill(0, 48, 1);
  c.kv.copy_rows(0, 1, 48);
  c.kv.copy_rows(1, 2, 40);  // a copy of a copy maps the first owner's pages
  EXPECT_TRUE(c.holds(2, 40, 1));
  c.row(0, 1, 0)[1] ^= 0xff;
  EXPECT_EQ(c.row(2, 1, 0)[1], c.row(0, 1, 0)[1]);
  c.row(0, 1, 0)[1] ^= 0xff;
  // Stream 1 copied into stream 0 (the owner): streams 1 and 2 keep what they showed.
  c.fill(3, 20, 5);
  c.kv.copy_rows(3, 0, 20);
  EXPECT_TRUE(c.holds(0, 20, 5));
  EXPECT_TRUE(c.holds(1, 48, 1));
  EXPECT_TRUE(c.holds(2, 40, 1));
  // A stream copied over by another drops its old rows.
  c.kv.copy_rows(2, 1, 16);
  EXPECT_TRUE(c.holds(1, 16, 1));
  EXPECT_TRUE(c.holds(2, 40, 1));
  c.kv.zero_all();
  for (int32_t s = 0; s < kStreams; ++s) EXPECT_TRUE(c.holds(s, 0, 0)) << s;
  c.fill(0, 64, 2);
  c.kv.copy_rows(0, 3, 64);
  EXPECT_TRUE(c.holds(3, 64, 2));
}

// When the system refuses a remapping (its limit on mappings), the call says so, no other
// stream's rows change, and the streams involved work again once remapping does.
TEST(KvCache, ARefusedRemapFailsTheCallAndHarmsNoOtherStream) {
  Cache c(true);
  c.fill(0, 50, 1);
  c.kv.fail_remaps_after(1);  // the copy's first block maps, its second does not
  EXPECT_FALSE(c.kv.copy_rows(0, 1, 50));
  EXPECT_TRUE(c.holds(0, 50, 1));
  c.kv.fail_remaps_after(-1);
  ASSERT_TRUE(c.kv.zero_rows(1, 0, 50));  // the failed stream's reset
  EXPECT_TRUE(c.holds(1, 0, 0));
  EXPECT_TRUE(c.holds(0, 50, 1));
  ASSERT_TRUE(c.kv.copy_rows(0, 1, 50));
  ASSERT_TRUE(c.kv.copy_rows(0, 2, 50));
  // The owner's reset must first give streams 1 and 2 their own pages: refused half-way,
  // the reset fails and every stream still shows what it showed.
  c.kv.fail_remaps_after(2);
  EXPECT_FALSE(c.kv.zero_rows(0, 0, 50));
  c.kv.fail_remaps_after(-1);
  for (int32_t s = 0; s < 3; ++s) EXPECT_TRUE(c.holds(s, 50, 1)) << s;
  EXPECT_TRUE(c.kv.zero_rows(0, 0, 50));
  EXPECT_TRUE(c.holds(0, 0, 0));
  EXPECT_TRUE(c.holds(1, 50, 1));
  EXPECT_TRUE(c.holds(2, 50, 1));
  c.kv.fail_remaps_after(0);
  EXPECT_TRUE(c.kv.zero_all());  // nothing shared any more: no remapping needed
  c.kv.fail_remaps_after(-1);
}

TEST(KvCache, WithoutSharingCopiesAreCopies) {
  Cache c(false);
  EXPECT_FALSE(c.kv.sharing());
  c.fill(0, 40, 1);
  c.kv.copy_rows(0, 1, 40);
  EXPECT_EQ(c.kv.shared_rows(1), 0);
  EXPECT_TRUE(c.holds(1, 40, 1));
  c.row(0, 0, 0)[5] ^= 0xff;
  EXPECT_NE(c.row(1, 0, 0)[5], c.row(0, 0, 0)[5]);
  c.row(0, 0, 0)[5] ^= 0xff;
  c.kv.zero_rows(0, 0, 40);
  EXPECT_TRUE(c.holds(1, 40, 1));
  EXPECT_TRUE(c.holds(0, 0, 0));
}

}  // namespace
}  // namespace kiln::rt
