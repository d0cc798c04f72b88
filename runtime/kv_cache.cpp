// runtime/kv_cache.cpp — see kv_cache.h.
#include "runtime/kv_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/falloc.h>
#include <sys/syscall.h>
#endif

#include <algorithm>
#include <cstring>

namespace kiln::rt {
namespace {

// A memory file for the cache (Linux and Android: memfd_create by its syscall, which
// older Android C libraries do not wrap), or -1.
int memory_file(uint64_t size) {
#if defined(__linux__) && defined(SYS_memfd_create)
  const int fd = (int)syscall(SYS_memfd_create, "kiln-kv", 1u /* MFD_CLOEXEC */);
  if (fd < 0) return -1;
  if (ftruncate(fd, (off_t)size) != 0) {
    close(fd);
    return -1;
  }
  return fd;
#else
  (void)size;
  return -1;
#endif
}

}  // namespace

KvCache::~KvCache() {
  // A fork()ed child did not inherit a shared cache (MADV_DONTFORK): its range is free
  // there and may hold the child's own mappings since, which munmap would take away.
  if (p_ && !(dontfork_pid_ != 0 && dontfork_pid_ != getpid())) munmap(p_, (size_t)size_);
  if (fd_ >= 0) close(fd_);
}

bool KvCache::allocate(uint64_t stream_bytes, int32_t streams, std::span<const kiln_kv_block> blocks, bool share) {
  stream_bytes_ = stream_bytes;
  blocks_.assign(blocks.begin(), blocks.end());
  share_.assign((size_t)std::max(streams, 0), Share{});
  page_ = (uint64_t)sysconf(_SC_PAGESIZE);
  const uint64_t bytes = stream_bytes * (uint64_t)std::max(streams, 0);
  if (bytes > SIZE_MAX / 2) return false;  // 32-bit hosts
  size_ = bytes == 0 ? 64 : bytes;
  // Pages line up between streams only if a stream is a whole number of pages.
  if (share && streams > 1 && stream_bytes % page_ == 0 && (fd_ = memory_file(size_)) >= 0) {
    void* p = mmap(nullptr, (size_t)size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p != MAP_FAILED) {
      p_ = static_cast<uint8_t*>(p);
#if defined(MADV_DONTFORK)
      // Shared memory would stay shared with a forked child (private memory is copied on
      // write): a child gets no cache at all rather than the parent's.
      if (madvise(p_, (size_t)size_, MADV_DONTFORK) == 0) dontfork_pid_ = getpid();
#endif
      return true;
    }
    close(fd_);
    fd_ = -1;
  }
  void* p = mmap(nullptr, (size_t)size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  p_ = static_cast<uint8_t*>(p);
  return true;
}

void KvCache::shared_pages(int32_t s, size_t k, int32_t rows, uint64_t& b, uint64_t& e) const {
  const uint64_t start = (uint64_t)s * stream_bytes_ + blocks_[k].offset;
  const uint64_t end = start + (uint64_t)rows * blocks_[k].row_bytes;
  b = (start + page_ - 1) / page_ * page_;
  e = std::max(b, end / page_ * page_);
}

bool KvCache::map_pages(uint64_t at, uint64_t file_offset, uint64_t len) {
  if (remaps_left_ == 0) return false;
  if (remaps_left_ > 0) --remaps_left_;
  void* want = p_ + at;
  return mmap(want, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_, (off_t)file_offset) == want;
}

// Zeroes [off, off + n) of memory that maps its own place in the file (or no file): whole
// pages are given back to the system (they read as zero again and cost no memory), the
// partial pages at the ends are cleared.
void KvCache::zero_bytes(uint64_t off, uint64_t n) {
  if (n == 0) return;
  const uint64_t pb = (off + page_ - 1) / page_ * page_, pe = (off + n) / page_ * page_;
  bool whole = false;
  if (pb < pe) {
#if defined(__linux__)
    whole = fd_ >= 0 ? fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)pb, (off_t)(pe - pb)) == 0
                     : madvise(p_ + pb, (size_t)(pe - pb), MADV_DONTNEED) == 0;
#endif
  }
  if (!whole) {
    std::memset(p_ + off, 0, (size_t)n);
    return;
  }
  std::memset(p_ + off, 0, (size_t)(pb - off));
  std::memset(p_ + pe, 0, (size_t)(off + n - pe));
}

// A failed remap (the system's limit on mappings, vm.max_map_count) leaves the record as
// it was: a stream still recorded as sharing is only ever unshared again (remapping its own
// pages is idempotent), so the record stays on the safe side of what is mapped.
bool KvCache::unshare(int32_t s, bool keep) {
  Share& sh = share_[(size_t)s];
  if (sh.owner < 0) return true;
  const uint64_t delta = (uint64_t)s * stream_bytes_ - (uint64_t)sh.owner * stream_bytes_;
  for (size_t k = 0; k < blocks_.size(); ++k) {
    uint64_t b, e;
    shared_pages(s, k, sh.rows, b, e);
    if (e == b) continue;
    if (!map_pages(b, b, e - b)) return false;  // the stream's own pages back
    if (keep) std::memcpy(p_ + b, p_ + b - delta, (size_t)(e - b));
    else zero_bytes(b, e - b);
  }
  sh = Share{};
  return true;
}

bool KvCache::prepare_write(int32_t s, int32_t from, bool keep) {
  if (fd_ < 0) return true;
  for (size_t y = 0; y < share_.size(); ++y)
    if (share_[y].owner == s && share_[y].rows > from && !unshare((int32_t)y, /*keep=*/true)) return false;
  if (share_[(size_t)s].owner >= 0 && share_[(size_t)s].rows > from) return unshare(s, keep);
  return true;
}

bool KvCache::copy_rows(int32_t src, int32_t dst, int32_t rows) {
  if (!prepare_write(dst, 0, /*keep=*/false)) return false;  // dst's old rows go
  zero_bytes((uint64_t)dst * stream_bytes_, stream_bytes_);
  // The pages src shows for its first rows belong to src, or to the stream it maps.
  const Share& from = share_[(size_t)src];
  const int32_t owner = from.owner >= 0 ? from.owner : src;
  const int32_t limit = fd_ < 0 ? 0 : from.owner >= 0 ? std::min(rows, from.rows) : rows;
  const uint64_t to_owner = (uint64_t)owner * stream_bytes_, to_dst = (uint64_t)dst * stream_bytes_;
  const uint64_t to_src = (uint64_t)src * stream_bytes_;
  // Recorded before mapping: whatever happens below, dst is at most what the record says.
  if (limit > 0) share_[(size_t)dst] = Share{owner, limit};
  bool ok = true;
  for (size_t k = 0; k < blocks_.size(); ++k) {
    const uint64_t start = to_dst + blocks_[k].offset, end = start + (uint64_t)rows * blocks_[k].row_bytes;
    uint64_t b = start, e = start;
    if (limit > 0) shared_pages(dst, k, limit, b, e);
    if (e > b && !map_pages(b, b - to_dst + to_owner, e - b)) {
      // Copy these pages instead, into dst's own (a failed MAP_FIXED may have unmapped them).
      if (!map_pages(b, b, e - b)) ok = false;
      b = e = start;
    }
    if (e == b) b = e = start;
    if (!ok) break;
    std::memcpy(p_ + start, p_ + start - to_dst + to_src, (size_t)(b - start));
    std::memcpy(p_ + e, p_ + e - to_dst + to_src, (size_t)(end - e));
  }
  return ok;
}

bool KvCache::zero_rows(int32_t s, int32_t from, int32_t to) {
  if (!prepare_write(s, from, /*keep=*/from > 0)) return false;
  if (from == 0) {
    zero_bytes((uint64_t)s * stream_bytes_, stream_bytes_);
    return true;
  }
  for (const kiln_kv_block& blk : blocks_)
    zero_bytes((uint64_t)s * stream_bytes_ + blk.offset + (uint64_t)from * blk.row_bytes,
               (uint64_t)(to - from) * blk.row_bytes);
  return true;
}

uint64_t KvCache::resident_bytes() const {
  struct stat st;
  if (fd_ < 0 || fstat(fd_, &st) != 0) return 0;
  return (uint64_t)st.st_blocks * 512;
}

bool KvCache::zero_all() {
  for (size_t s = 0; s < share_.size(); ++s)
    if (!unshare((int32_t)s, /*keep=*/false)) return false;  // own pages back, then all cleared
  zero_bytes(0, size_);
  return true;
}

}  // namespace kiln::rt
