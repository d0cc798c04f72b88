// tests/unit/step_runner.h — runs the step function kiln compiles for a graph, in this
// process, on real threads.
//
//   graph --freeze-base,plan-memory--> planned graph --compile_graph(host)--> model.o
//         --JitObject::load--> kiln_compiled_model.step(args, tid, nth) on nth threads
//
// The runner owns what the runtime would: a copy of the frozen weight blob, the arena, the
// KV cache and the logits buffer. Each buffer is 64-byte aligned with guard bytes on both
// sides that a step must leave alone. Before every step the arena and the logits buffer
// are filled with NaN, so a node that reads bytes no node wrote in this step, or a thread
// that runs ahead of a missing barrier, produces NaN instead of a plausible number. A
// schedule can make threads lag behind each other at every barrier (and at the start) to
// widen those races; with one thread the barrier is a no-op that only counts its calls.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "codegen/codegen.h"
#include "codegen/jit.h"
#include "ir/interpreter.h"
#include "passes/freeze_base.h"
#include "passes/pass.h"
#include "runtime/include/kiln/model_abi.h"
#include "support/half.h"

namespace kiln::testing {

// Sets the limits the backend passes read, then runs `passes` verifying after each.
inline Status plan_for_codegen(Graph& g, int64_t max_rows, int64_t max_threads,
                               std::string_view passes = "fuse-dequant-matmul,freeze-base,plan-memory") {
  g.set_attr("max_rows", max_rows);
  g.set_attr("max_threads", max_threads);
  // These tests hold generated code to the interpreter's float math; the int8-activation
  // matmuls have their own tests with a rounding bound.
  if (!g.int_attr("int8_activations")) g.set_attr("int8_activations", int64_t{0});
  PassManagerOptions opts;
  opts.verify_each = true;
  PassManager pm(std::move(opts));
  KILN_TRY(pm.add_pipeline(passes));
  return pm.run(g);
}

// `size` bytes, 64-byte aligned, between two guard zones.
class GuardedBuffer {
 public:
  static constexpr size_t kGuard = 256;  // a multiple of 64: the data stays aligned
  static constexpr uint8_t kGuardByte = 0xA5;

  explicit GuardedBuffer(size_t size) : size_(size), storage_(size + 2 * kGuard + 64, kGuardByte) {
    auto p = reinterpret_cast<uintptr_t>(storage_.data());
    start_ = (size_t)((64 - p % 64) % 64) + kGuard;
  }
  uint8_t* data() { return storage_.data() + start_; }
  const uint8_t* data() const { return storage_.data() + start_; }
  size_t size() const { return size_; }
  void fill(uint8_t b) { std::memset(data(), b, size_); }
  bool guards_intact() const {
    for (size_t i = start_ - kGuard; i < start_; ++i)
      if (storage_[i] != kGuardByte) return false;
    for (size_t i = start_ + size_; i < start_ + size_ + kGuard; ++i)
      if (storage_[i] != kGuardByte) return false;
    return true;
  }

 private:
  size_t size_;
  std::vector<uint8_t> storage_;
  size_t start_ = 0;
};

// The row metadata of one step, as the step interface takes it. Graphs with LoRA inputs
// (lora-as-input) also take each row's adapter slot and the adapter factors: f32 tensors
// named lora.*, which the runner copies into the adapter region at plan-memory's
// adapter_offset (inputs not given stay zero).
struct StepRows {
  std::vector<int32_t> tokens, positions, streams, logit_rows;
  std::vector<int32_t> adapter_slots;
  std::map<std::string, Tensor> adapters;

  int64_t n_rows() const {
    return (int64_t)std::max({tokens.size(), positions.size(), streams.size()});
  }
  // The same rows as interpreter inputs (inputs the graph lacks are ignored).
  std::map<std::string, Tensor> interpreter_inputs() const {
    auto t = [](const std::vector<int32_t>& v) { return Tensor::i32_of({(int64_t)v.size()}, v); };
    std::map<std::string, Tensor> in = {{"tokens", t(tokens)}, {"positions", t(positions)},
                                        {"streams", t(streams)}, {"logit_rows", t(logit_rows)},
                                        {"adapter_slots", t(adapter_slots)}};
    for (const auto& [name, v] : adapters) in.emplace(name, v);
    return in;
  }
};

// How the threads of a step are run. lag > 0: thread tid sleeps tid * lag_us at the start
// and after every barrier (low tids run ahead); lag < 0: the high tids run ahead.
struct Schedule {
  int nth = 1;
  int lag = 0;
  int lag_us = 200;
};

class StepRunner {
 public:
  // Compiles the planned graph `g` for the host profile and loads the object.
  static Result<std::unique_ptr<StepRunner>> create(const Graph& g, const CodegenOptions& opts = {}) {
    auto* frozen = dynamic_cast<const FrozenWeights*>(g.weights().get());
    if (!frozen) return make_error("the graph's weights are not frozen: run freeze-base first");
    TargetProfile host = host_profile();
    KILN_ASSIGN(CompiledCode code, compile_graph(g, host, opts));
    KILN_ASSIGN(std::unique_ptr<JitObject> jit, JitObject::load(code.object, opts.symbol));
    const kiln_compiled_model* m = jit->model();
    std::unique_ptr<StepRunner> r(new StepRunner(*m, frozen->blob()));
    for (const Node* n : g.nodes_of(Op::Input))
      if (auto off = n->int_attr("adapter_offset")) r->adapter_offsets_[std::string(*n->str_attr("name"))] = *off;
    r->code_ = std::move(code);
    r->jit_ = std::move(jit);
    return r;
  }

  const CompiledCode& code() const { return code_; }
  const kiln_compiled_model& model() const { return *jit_->model(); }
  // Zeroes the KV cache, as for new conversations on every stream.
  void reset_kv() { kv_.fill(0); }
  // Barrier calls thread 0 made in the last step.
  int barriers() const { return barriers_; }

  // Runs one step and returns the first `n_out` floats of the logits buffer. An Error says
  // what else went wrong: a guard zone or the weights were written, or the step wrote
  // logits past n_out.
  // `entry` runs another entry point of the model instead of its step (a DS2D verify or
  // draft function), on the same weights, arena and KV cache.
  using Entry = void (*)(const kiln_step_args*, int32_t, int32_t);
  Result<std::vector<float>> step(const StepRows& rows, const Schedule& s, size_t n_out, Entry entry = nullptr) {
    const kiln_compiled_model& m = model();
    size_t cap = std::max(n_out, (size_t)(m.max_rows * m.n_vocab));
    if (!logits_ || logits_->size() < cap * 4) logits_ = std::make_unique<GuardedBuffer>(cap * 4);
    arena_.fill(0xFF);  // NaN in every float
    logits_->fill(0xFF);
    adapters_.fill(0);
    for (const auto& [name, v] : rows.adapters) {
      auto it = adapter_offsets_.find(name);
      if (it == adapter_offsets_.end()) return make_error("the graph has no adapter input \"{}\"", name);
      // f32 factors and scales, i32 ranks: 4 bytes an element either way.
      const void* src = v.dtype == DType::I32 ? (const void*)v.i32.data() : (const void*)v.f32.data();
      const size_t bytes = (v.dtype == DType::I32 ? v.i32.size() : v.f32.size()) * 4;
      if ((size_t)it->second + bytes > adapters_.size())
        return make_error("adapter input \"{}\" does not fit the adapter region", name);
      std::memcpy(adapters_.data() + it->second, src, bytes);
    }
    kiln_step_args a{};
    a.adapter_slots = rows.adapter_slots.data();
    a.adapters = adapters_.data();
    a.tokens = rows.tokens.data();
    a.positions = rows.positions.data();
    a.streams = rows.streams.data();
    a.logit_rows = rows.logit_rows.data();
    a.n_rows = rows.n_rows();
    a.n_logit_rows = (int64_t)rows.logit_rows.size();
    a.weights = weights_.data();
    a.arena = arena_.data();
    a.kv = kv_.data();
    a.logits = reinterpret_cast<float*>(logits_->data());

    Sync sync;
    sync.schedule = s;
    std::optional<std::barrier<>> barrier;
    if (s.nth > 1) barrier.emplace(s.nth);
    sync.barrier = barrier ? &*barrier : nullptr;
    a.barrier = &Sync::arrive;
    a.barrier_ctx = &sync;
    auto run = [&](int32_t tid) {
      t_tid() = tid;
      sync.lag();
      (entry ? entry : m.step)(&a, tid, s.nth);
    };
    if (s.nth == 1) {
      run(0);
    } else {
      std::vector<std::thread> ts;
      for (int32_t t = 0; t < s.nth; ++t) ts.emplace_back(run, t);
      for (auto& t : ts) t.join();
    }
    barriers_ = sync.calls.load();

    if (!arena_.guards_intact()) return make_error("the step wrote outside the arena");
    if (!kv_.guards_intact()) return make_error("the step wrote outside the KV cache");
    if (!adapters_.guards_intact()) return make_error("the step wrote outside the adapter region");
    if (!logits_->guards_intact() || !weights_.guards_intact())
      return make_error("the step wrote outside the logits or weights buffer");
    if (std::memcmp(weights_.data(), blob_.data(), blob_.size()) != 0)
      return make_error("the step wrote into the weights");
    const uint8_t* lb = logits_->data();
    for (size_t i = n_out * 4; i < logits_->size(); ++i)
      if (lb[i] != 0xFF) return make_error("the step wrote logits float {} (expected {})", i / 4, n_out);
    std::vector<float> out(n_out);
    if (n_out) std::memcpy(out.data(), lb, n_out * 4);  // (memcpy of nothing may not take null)
    return out;
  }

  // The floats of a state buffer [S,C,F] (f32, or f16 widened) gathered from every
  // stream's KV region, laid out like the interpreter's state tensor.
  std::vector<float> state(const Node* st) const {
    const auto& sh = st->type().shape;
    const size_t per = (size_t)(sh[1] * sh[2]);
    const bool half = st->type().dtype == DType::F16;
    std::vector<float> out((size_t)sh[0] * per);
    for (int64_t s = 0; s < sh[0]; ++s) {
      const uint8_t* src = kv_.data() + s * model().kv_stream_bytes + *st->int_attr("kv_offset");
      if (!half) {
        std::memcpy(out.data() + s * per, src, per * 4);
        continue;
      }
      for (size_t i = 0; i < per; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[s * per + i] = fp16_to_f32(h);
      }
    }
    return out;
  }

 private:
  StepRunner(const kiln_compiled_model& m, const std::string& blob)
      : blob_(blob), weights_(blob.size()), arena_(m.arena_bytes), kv_(m.kv_bytes), adapters_(m.adapter_bytes) {
    std::memcpy(weights_.data(), blob_.data(), blob_.size());
    kv_.fill(0);
  }

  static int32_t& t_tid() {
    static thread_local int32_t tid = 0;
    return tid;
  }

  struct Sync {
    Schedule schedule;
    std::barrier<>* barrier = nullptr;
    std::atomic<int> calls{0};
    void lag() const {
      if (!schedule.lag) return;
      int32_t tid = t_tid();
      int rank = schedule.lag > 0 ? tid : schedule.nth - 1 - tid;
      if (rank) std::this_thread::sleep_for(std::chrono::microseconds(rank * schedule.lag_us));
    }
    static void arrive(void* ctx) {
      auto* s = static_cast<Sync*>(ctx);
      if (t_tid() == 0) s->calls.fetch_add(1);
      if (!s->barrier) return;  // one thread: nothing to wait for
      s->barrier->arrive_and_wait();
      s->lag();
    }
  };

  CompiledCode code_;
  std::unique_ptr<JitObject> jit_;
  std::string blob_;
  GuardedBuffer weights_, arena_, kv_, adapters_;
  std::map<std::string, int64_t> adapter_offsets_;  // lora.* input -> adapter_offset
  std::unique_ptr<GuardedBuffer> logits_;
  int barriers_ = 0;
};

}  // namespace kiln::testing
