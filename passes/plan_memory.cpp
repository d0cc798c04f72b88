// passes/plan_memory.cpp — static memory plan: one arena for activations and scratch,
// one KV region per stream.
//
// Every value a step computes gets an arena offset (attr arena_offset), sized for
// max_rows rows; two values share bytes only when their lifetimes (definition to last
// use, in graph order) do not overlap. The value that feeds output "logits" is written
// straight into the caller's logits buffer (attr place = "logits"). Attention gets
// max-context floats of scratch per thread and per head of a kernel pass (attr
// scratch_offset). Each state
// buffer [S, C, F] gets an offset within a stream's KV region (attr kv_offset); stream s
// lives at kv + s * kv_stream_bytes.
//
//   %9 = matmul(%8, %w) : f32[?,576]   ->   %9 = matmul(%8, %w) {arena_offset = 147456} ...
//
// Inputs named lora.* (the adapter factors lora-as-input adds; static shapes) get an
// offset in the adapter region (attr adapter_offset), 64-byte aligned in graph order, and
// the graph records adapter_bytes when there are any.
//
// Records graph attributes arena_bytes, kv_stream_bytes (with several streams, a multiple
// of 16 KiB) and kv_bytes. Allocation is
// first-fit over a sorted free list, in graph order: deterministic.
#include <algorithm>
#include <deque>
#include <list>
#include <unordered_map>

#include "codegen/kernels/kernels.h"
#include "passes/passes.h"

namespace kiln {
namespace {

constexpr uint64_t kAlign = 64;
constexpr size_t kReuseDelay = 2;  // nodes a freed slot waits before reuse
uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// First-fit allocator over [0, infinity) with coalescing frees.
class Arena {
 public:
  uint64_t alloc(uint64_t size) {
    size = align_up(std::max<uint64_t>(size, 1));
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < size) continue;
      uint64_t off = it->first;
      it->first += size;
      it->second -= size;
      if (it->second == 0) free_.erase(it);
      return off;
    }
    // Grow: extend a free block that ends at the top, or start at the top.
    uint64_t off = top_;
    if (!free_.empty() && free_.back().first + free_.back().second == top_) {
      off = free_.back().first;
      free_.pop_back();
    }
    top_ = off + size;
    return off;
  }
  void release(uint64_t off, uint64_t size) {
    size = align_up(std::max<uint64_t>(size, 1));
    auto it = std::find_if(free_.begin(), free_.end(), [&](auto& b) { return b.first > off; });
    it = free_.insert(it, {off, size});
    auto next = std::next(it);
    if (next != free_.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free_.erase(next);
    }
    if (it != free_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free_.erase(it);
      }
    }
  }
  uint64_t high_water() const { return top_; }

 private:
  std::list<std::pair<uint64_t, uint64_t>> free_;  // (offset, size), sorted by offset
  uint64_t top_ = 0;
};

bool computes_value(Op op) {
  switch (op) {
    case Op::Input: case Op::Weight: case Op::Constant: case Op::State:
    case Op::KvWrite:  // writes the state buffer in place
    case Op::Output:   // names its operand
      return false;
    case Op::Embed: case Op::RmsNorm: case Op::MatMul: case Op::Add: case Op::Mul:
    case Op::Silu: case Op::Rope: case Op::LastRow: case Op::GatherRows: case Op::Attention:
    case Op::Lora: case Op::Dequant: case Op::MatMulSwiGlu: case Op::RmsMatMul:
      return true;
  }
  return false;
}

class PlanMemoryPass final : public Pass {
 public:
  std::string_view name() const override { return "plan-memory"; }

  Result<bool> run(Graph& g) override {
    auto max_rows = g.int_attr("max_rows");
    auto max_threads = g.int_attr("max_threads");
    if (!max_rows || *max_rows < 1 || !max_threads || *max_threads < 1)
      return make_error("needs graph attributes max_rows and max_threads >= 1");
    std::vector<Node*> nodes = g.nodes();
    std::unordered_map<const Node*, size_t> last_use;
    for (size_t i = 0; i < nodes.size(); ++i)
      for (Node* o : nodes[i]->operands()) last_use[o] = i;

    auto bytes_of = [&](const TensorType& t) -> Result<uint64_t> {
      uint64_t n = 4;
      for (size_t d = 0; d < t.shape.size(); ++d) {
        int64_t v = t.shape[d];
        if (v == kDynamic) {
          if (d != 0) return make_error("type {} is dynamic beyond the row count", t.str());
          v = *max_rows;
        }
        n *= (uint64_t)v;
      }
      return n;
    };

    // KV: one region per stream holding every state buffer's share of that stream.
    uint64_t kv_stream = 0;
    int64_t streams = 0;
    for (Node* n : nodes) {
      if (n->op() != Op::State) continue;
      const auto& s = n->type().shape;
      if (s.size() != 3) return make_error("state {} must be [S,C,F] for planning", n->type().str());
      if (streams && s[0] != streams)
        return make_error("state buffers disagree on the stream count ({} and {})", streams, s[0]);
      streams = s[0];
      n->set_attr("kv_offset", (int64_t)kv_stream);
      kv_stream += align_up(dtype_bytes(n->type().dtype, (uint64_t)(s[1] * s[2])));  // f32 or f16 rows
    }

    // Adapter region: every lora.* input at a fixed offset.
    uint64_t adapter_bytes = 0;
    bool has_adapters = false;
    for (Node* n : nodes) {
      if (n->op() != Op::Input) continue;
      auto name = n->str_attr("name");
      if (!name || name->substr(0, 5) != "lora.") continue;
      uint64_t size = 4;
      for (int64_t d : n->type().shape) {
        if (d == kDynamic) return make_error("adapter input \"{}\" must have a static shape", *name);
        size *= (uint64_t)d;
      }
      n->set_attr("adapter_offset", (int64_t)adapter_bytes);
      adapter_bytes += align_up(size);
      has_adapters = true;
    }

    const Node* logits = nullptr;
    if (const Node* out = g.find_output("logits")) logits = out->operand(0);

    Arena arena;
    std::deque<std::pair<size_t, std::pair<uint64_t, uint64_t>>> pending;  // (free at, slot)
    std::unordered_map<const Node*, std::pair<uint64_t, uint64_t>> placed;  // offset, size
    for (size_t i = 0; i < nodes.size(); ++i) {
      Node* n = nodes[i];
      if (computes_value(n->op())) {
        auto lu = last_use.find(n);
        if (n == logits) {
          n->set_attr("place", std::string("logits"));
        } else if (lu != last_use.end()) {
          KILN_ASSIGN(uint64_t size, bytes_of(n->type()));
          uint64_t off = arena.alloc(size);
          placed[n] = {off, size};
          n->set_attr("arena_offset", (int64_t)off);
        }
      }
      if (n->op() == Op::Attention) {
        // The kernel's scores: C floats per head of a pass, passes per thread (kernels.h).
        const auto& cache = n->operand(1)->type().shape;
        const int64_t heads = kiln_attention_heads_per_pass(n->int_attr("n_head").value_or(1),
                                                            n->int_attr("n_kv_head").value_or(1));
        uint64_t size = (uint64_t)*max_threads * (uint64_t)heads * (uint64_t)cache[cache.size() - 2] * 4;
        uint64_t off = arena.alloc(size);
        n->set_attr("scratch_offset", (int64_t)off);
        arena.release(off, size);  // scratch lives only while the node runs
      }
      // Operands whose last use this was give their bytes back — a few nodes later, so
      // the next nodes (often independent siblings running between the same barriers)
      // do not overwrite what this one may still be reading on another thread.
      for (Node* o : n->operands()) {
        auto p = placed.find(o);
        if (p != placed.end() && last_use[o] == i) {
          pending.push_back({i + kReuseDelay, p->second});
          placed.erase(p);
        }
      }
      while (!pending.empty() && pending.front().first <= i) {
        arena.release(pending.front().second.first, pending.front().second.second);
        pending.pop_front();
      }
    }
    g.set_attr("arena_bytes", (int64_t)align_up(arena.high_water()));
    // Several streams: each stream's region a whole number of 16 KiB pages (4 KiB and
    // 16 KiB pages both), so that a prompt copied between streams can map the same memory
    // pages at both streams' addresses (runtime/kv_cache.h). At most 16 KiB per stream.
    if (streams > 1) kv_stream = (kv_stream + 16383) / 16384 * 16384;
    g.set_attr("kv_stream_bytes", (int64_t)kv_stream);
    g.set_attr("kv_bytes", (int64_t)(kv_stream * (uint64_t)std::max<int64_t>(streams, 1)));
    if (has_adapters) g.set_attr("adapter_bytes", (int64_t)adapter_bytes);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_plan_memory_pass() { return std::make_unique<PlanMemoryPass>(); }

}  // namespace kiln
