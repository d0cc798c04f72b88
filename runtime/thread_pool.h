// runtime/thread_pool.h — persistent workers, one dispatch per step, a spin-then-sleep
// barrier.
//
// A step is run by n threads: the caller is tid 0 and n - 1 workers wait for work. run()
// publishes the job with one atomic increment (a futex wake only if a worker has gone to
// sleep), runs tid 0 itself and waits for the workers. Every wait (for work, for the end
// of a step, at the barrier) first spins, since most waits inside a step are shorter than
// a context switch, and then sleeps on a futex (Linux and Android; C++20 atomic wait
// elsewhere), so that an oversubscribed core, where the thread being waited for is not
// even running, is not burnt by spinning.
//
// The spin budget adapts (one for waits inside a step, one for workers waiting for the
// next step): it halves each time a spin ends in sleep and doubles each time a
// spin succeeds, between kMinSpinNs and the pool's maximum (kDefaultSpinNs); every 64th
// wait of a thread probes with kProbeSpinNs so that a budget driven down by a burst of load
// recovers. On an idle machine waits are short and spins succeed (a barrier costs ~100 ns);
// when two threads of a step share one core, spinning cannot succeed and the budget falls
// to ~1 us, so a barrier costs about one futex sleep/wake instead of a full spin budget.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace kiln {

class ThreadPool {
 public:
  using Job = void (*)(void* ctx, int32_t tid, int32_t n_threads);

  // Largest spin before sleeping, in nanoseconds: longer than most waits inside a step
  // (an op's load imbalance) and than the gap between decode steps (the app's sampling,
  // DS2D's drafting: tens of microseconds), far shorter than a scheduler time slice.
  // With 30 us, the worker slept between steps and at the odd barrier, and each step
  // paid a futex wake and a wake-up (~6% of a decode profile's samples in the kernel's
  // wake path); measured on this machine, kiln_bench decode at 2 threads, alternated
  // rounds: 200 us gave 1.03-1.24x the tokens/s of 30 us (7 rounds, every one ahead),
  // 200 us only between steps (30 inside) about half of that. The budget still adapts
  // down when spins fail (an oversubscribed core), so a busy phone does not burn it.
  static constexpr int64_t kDefaultSpinNs = 200000;
  static constexpr int64_t kMinSpinNs = 1000;
  // The every-64th-wait probe that lets a budget driven down by load recover spins at
  // most this long (or the current budget, if longer): probing with the full 200 us made
  // an oversubscribed barrier ~13-16 us where 30 us probes gave a median of ~4 us.
  static constexpr int64_t kProbeSpinNs = 30000;

  // Starts n_threads - 1 workers (n_threads >= 1). Throws std::system_error if a thread
  // cannot be started (the C API turns that into a status). spin_ns: the largest spin
  // budget (0 = sleep at once); adaptive = false keeps it fixed (tests compare policies).
  explicit ThreadPool(int32_t n_threads, int64_t spin_ns = kDefaultSpinNs, bool adaptive = true);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int32_t n_threads() const { return n_; }

  // Runs job(ctx, tid, n) on every thread and returns when all have returned. Not
  // reentrant: one run() at a time.
  void run(Job job, void* ctx);

  // Returns once all n threads of the current job have called it.
  void barrier();
  // The same, with the signature of kiln_step_args::barrier (ctx is the ThreadPool).
  static void barrier_fn(void* ctx) { static_cast<ThreadPool*>(ctx)->barrier(); }

 private:
  // A word threads wait on, and how many are asleep on it (so wakers skip the syscall).
  struct alignas(64) WaitWord {
    std::atomic<uint32_t> value{0};
    std::atomic<uint32_t> sleepers{0};
  };
  // Until w.value != old, spinning up to `budget` (which it adapts) before sleeping.
  void wait_while(WaitWord& w, uint32_t old, std::atomic<int64_t>& budget) const;
  static void wake_all(WaitWord& w);

  void worker(int32_t tid);

  const int32_t n_;
  const int64_t spin_ns_;
  const bool adaptive_;
  // Current spin budgets: inside a step (barriers, the end of a step), and of workers
  // waiting for the next step. Apart because the gap between steps is the app's own
  // work (sampling, printing: often longer than the largest spin), and spins that failed
  // there halved the one budget until barrier waits of a few microseconds slept on the
  // futex too: ~15% of a decode step's cycles went to sleeping and waking.
  alignas(64) mutable std::atomic<int64_t> budget_ns_;
  alignas(64) mutable std::atomic<int64_t> work_budget_ns_;
  WaitWord gen_;      // bumped once per job (and at shutdown)
  WaitWord pending_;  // workers still running the current job
  WaitWord phase_;    // barrier generation
  alignas(64) std::atomic<uint32_t> arrived_{0};
  alignas(64) Job job_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};

}  // namespace kiln
