// runtime/thread_pool.cpp — see thread_pool.h.
//
// Memory ordering. A waiter announces itself (sleepers++) and then sleeps only if the word
// still holds the old value (the futex compares atomically in the kernel); a waker stores
// the new value and then looks at sleepers. Both sides are sequentially consistent, so
// either the waker sees the sleeper and wakes it, or the sleeper sees the new value and
// does not sleep. The barrier is the classic sense-reversing one: the last thread to
// arrive resets the count and then bumps the phase, which releases the others.
#include "runtime/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <climits>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kiln {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

#if defined(__linux__)
void futex_wait(std::atomic<uint32_t>* addr, uint32_t old) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT_PRIVATE, old, nullptr,
          nullptr, 0);
}
void futex_wake_all(std::atomic<uint32_t>* addr) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}
#else
void futex_wait(std::atomic<uint32_t>* addr, uint32_t old) { addr->wait(old); }
void futex_wake_all(std::atomic<uint32_t>* addr) { addr->notify_all(); }
#endif
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

}  // namespace

void ThreadPool::wait_while(WaitWord& w, uint32_t old, std::atomic<int64_t>& budget_ns) const {
  if (w.value.load(std::memory_order_acquire) != old) return;
  if (spin_ns_ > 0) {
    thread_local uint32_t waits = 0;
    const int64_t cur = budget_ns.load(std::memory_order_relaxed);
    const int64_t probe = std::max(cur, std::min(spin_ns_, kProbeSpinNs));
    const int64_t budget = (++waits & 63) == 0 ? probe : cur;  // every 64th wait probes
    const int64_t deadline = now_ns() + budget;
    for (uint32_t i = 1;; ++i) {
      cpu_relax();
      if (w.value.load(std::memory_order_acquire) != old) {
        if (adaptive_ && cur < spin_ns_)
          budget_ns.store(std::min(spin_ns_, 2 * cur), std::memory_order_relaxed);
        return;
      }
      if ((i & 63) == 0 && now_ns() > deadline) break;
    }
    if (adaptive_ && cur > kMinSpinNs)
      budget_ns.store(std::max(kMinSpinNs, cur / 2), std::memory_order_relaxed);
  }
  w.sleepers.fetch_add(1, std::memory_order_seq_cst);
  while (w.value.load(std::memory_order_seq_cst) == old) futex_wait(&w.value, old);
  w.sleepers.fetch_sub(1, std::memory_order_relaxed);
}

void ThreadPool::wake_all(WaitWord& w) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (w.sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(&w.value);
}

ThreadPool::ThreadPool(int32_t n_threads, int64_t spin_ns, bool adaptive)
    : n_(n_threads < 1 ? 1 : n_threads),
      spin_ns_(spin_ns < 0 ? 0 : spin_ns),
      adaptive_(adaptive),
      budget_ns_(spin_ns_),
      work_budget_ns_(spin_ns_) {
  workers_.reserve(static_cast<size_t>(n_ - 1));
  try {
    for (int32_t t = 1; t < n_; ++t) workers_.emplace_back([this, t] { worker(t); });
  } catch (...) {
    stop_.store(true, std::memory_order_release);
    gen_.value.fetch_add(1, std::memory_order_seq_cst);
    wake_all(gen_);
    for (auto& w : workers_) w.join();
    throw;
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  gen_.value.fetch_add(1, std::memory_order_seq_cst);
  wake_all(gen_);
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker(int32_t tid) {
  uint32_t seen = 0;
  for (;;) {
    wait_while(gen_, seen, work_budget_ns_);
    seen = gen_.value.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    job_(ctx_, tid, n_);
    if (pending_.value.fetch_sub(1, std::memory_order_acq_rel) == 1) wake_all(pending_);
  }
}

void ThreadPool::run(Job job, void* ctx) {
  if (n_ == 1) {
    job(ctx, 0, 1);
    return;
  }
  job_ = job;
  ctx_ = ctx;
  pending_.value.store(static_cast<uint32_t>(n_ - 1), std::memory_order_relaxed);
  gen_.value.fetch_add(1, std::memory_order_seq_cst);  // publishes job_, ctx_, pending_
  wake_all(gen_);
  job(ctx, 0, n_);
  for (uint32_t left; (left = pending_.value.load(std::memory_order_acquire)) != 0;)
    wait_while(pending_, left, budget_ns_);
}

void ThreadPool::barrier() {
  if (n_ == 1) return;
  const uint32_t phase = phase_.value.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(n_)) {
    arrived_.store(0, std::memory_order_relaxed);
    phase_.value.fetch_add(1, std::memory_order_seq_cst);
    wake_all(phase_);
  } else {
    wait_while(phase_, phase, budget_ns_);
  }
}

}  // namespace kiln
