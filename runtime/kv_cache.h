// runtime/kv_cache.h — a session's KV cache, whose streams can share a prompt's pages.
//
// Multi-stream decoding prefills a prompt once and gives every stream its KV rows
// (kiln_session_copy_stream). Copied, each stream's attention reads its own copy every
// step: for S styled replies to a long prompt that is S times the prompt's KV through the
// memory system, and S times the memory. Here the copy maps the whole pages of those rows
// to the same physical memory instead (the cache is a memfd mapped shared, so a page of
// one stream can be mapped again at another stream's address, as vAttention manages a KV
// cache with virtual memory rather than block tables in the kernels). The compiled code
// sees the usual [stream][block][row] layout and reads the same bytes either way, so
// results are bit for bit those of a copy; only the partial pages at the ends of a
// block's rows are copied.
//
// Rows are shared only while neither side writes them: a stream writes at its position
// and beyond, and the shared rows lie below the positions of both. What would write below
// (a reset, a truncation, another copy into a stream) first gives the streams that share
// those pages their own copy (`prepare_write`). Without memfd (or with sharing turned
// off) copies are plain copies.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <vector>

#include "kiln/model_abi.h"

namespace kiln::rt {

class KvCache {
 public:
  KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  ~KvCache();

  // Zeroed memory for `streams` streams of stream_bytes each, laid out by `blocks`.
  // share: map copied rows' pages instead of copying them, where the system allows.
  bool allocate(uint64_t stream_bytes, int32_t streams, std::span<const kiln_kv_block> blocks, bool share);
  uint8_t* data() const { return p_; }
  bool sharing() const { return fd_ >= 0; }

  // Each returns false when the system refused a remapping (its limit on mappings): the
  // streams involved are then unusable until a reset succeeds; no other stream's rows change.
  // dst holds src's first `rows` rows afterwards (dst != src; its earlier rows dropped).
  bool copy_rows(int32_t src, int32_t dst, int32_t rows);
  // Zeroes rows [from, to) of stream s (its rows below `from` keep their content).
  bool zero_rows(int32_t s, int32_t from, int32_t to);
  // Zeroes every stream.
  bool zero_all();
  // Rows of stream s that share pages with another stream's (0: none), for tests and stats.
  int32_t shared_rows(int32_t s) const { return share_[(size_t)s].rows; }
  // Memory the cache holds now (pages written and not given back), when sharing; else 0.
  uint64_t resident_bytes() const;
  // For tests: after n more remappings succeed, the next ones fail as the system's limit on
  // mappings would make them (-1: never).
  void fail_remaps_after(int n) { remaps_left_ = n; }

 private:
  // The process that mapped a cache with MADV_DONTFORK (0: none): in any other (a fork()ed
  // child) the range is not this cache's, and the destructor leaves it alone.
  pid_t dontfork_pid_ = 0;
  struct Share {
    int32_t owner = -1;  // the stream whose pages s maps, or -1
    int32_t rows = 0;    // rows [0, rows) of every block lie in the owner's pages (whole pages only)
  };
  // Before stream s changes rows at or above `from`: streams mapping its pages there get
  // their own copies, and so does s if it maps another stream's pages there (keep: with
  // the content it showed; else its rows there are dropped anyway).
  bool prepare_write(int32_t s, int32_t from, bool keep);
  // s maps its own memory again; keep: with the content it showed (else zeroed).
  bool unshare(int32_t s, bool keep);
  // Byte range [b, e) of stream s's whole pages holding rows [0, rows) of block k.
  void shared_pages(int32_t s, size_t k, int32_t rows, uint64_t& b, uint64_t& e) const;
  bool map_pages(uint64_t at, uint64_t file_offset, uint64_t len);
  void zero_bytes(uint64_t off, uint64_t n);

  uint8_t* p_ = nullptr;
  uint64_t size_ = 0, stream_bytes_ = 0, page_ = 4096;
  int fd_ = -1;
  int remaps_left_ = -1;
  std::vector<kiln_kv_block> blocks_;
  std::vector<Share> share_;
};

}  // namespace kiln::rt
