// codegen/lower.cpp — graph -> LLVM module, then optimise and emit for the profile.
//
// The step function runs the graph's nodes in order; each node is one call of a
// specialised kernel wrapper:
//
//   define internal void @"k.matmul_q4_1.576.576"(ptr %x, ptr %w, ptr %y, i64 %T, i32 %tid, i32 %nth)
//     ; calls @kiln_matmul_q4_1(x, w, y, T, 576, 576, tid, nth), inlined and specialised by O3
//
// A barrier is emitted before a node only when it reads bytes written since the last
// barrier, or writes bytes read or written since then (arena slots are reused), so
// independent nodes (the q/k/v projections, gate and up) run without one between them.
// A fuse-qkv group (three rms_matmuls on one x) is one kiln_rms_matmul3 call.
//
// DS2D entry points (ABI 4) are more graphs lowered into the same module the same way:
// one verify function per tree template (graphs from ds2d-unroll; their kv_write and
// attention call the tree kernels through wrappers that bind the template's depth and
// ancestor-mask arrays as constants) and the early-exit draft function. They share the
// step's weight offsets and KV layout, and the kernel wrappers the step already has.
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <llvm/Analysis/CGSCCPassManager.h>
#include <llvm/Analysis/LoopAnalysisManager.h>
#include <llvm/Bitcode/BitcodeReader.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Linker/Linker.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Target/TargetOptions.h>
#include <llvm/Transforms/Utils/Cloning.h>

#include "codegen/codegen.h"
#include "codegen/kernels/kernel_bitcode.h"
#include "codegen/kernels/kernels.h"
#include "codegen/lora_table.h"
#include "ir/tree.h"
#include "runtime/include/kiln/model_abi.h"

namespace kiln {
namespace {

using llvm::Value;

// Fields of kiln_step_args, in declaration order (model_abi.h).
enum StepArg { kTokens, kPositions, kStreams, kLogitRows, kNRows, kNLogitRows, kWeights, kArena,
               kKv, kLogits, kBarrier, kBarrierCtx, kAdapterSlots, kAdapters, kNumStepArgs };

// A byte range of one memory space, for the barrier hazard analysis.
struct Region {
  int space;  // 0 arena, 1 kv, 2 logits
  int64_t begin, end;
  bool overlaps(const Region& o) const { return space == o.space && begin < o.end && o.begin < end; }
};

std::string kernel_suffix(DType t) { return std::string(dtype_name(t)); }

class Lowering {
 public:
  // cpu_features: checked_cpu_features(p), recorded for the runtime's check at load.
  Lowering(llvm::LLVMContext& ctx, llvm::Module& m, const Graph& g, const TargetProfile& p, std::string cpu_features)
      : ctx_(ctx), m_(m), main_(g), g_(&g), p_(p), cpu_features_(std::move(cpu_features)), b_(ctx) {}

  Status lower(const CodegenOptions& opts, size_t* kernels) {
    auto* ptr = llvm::PointerType::get(ctx_, 0);
    auto* i64 = llvm::Type::getInt64Ty(ctx_);
    std::vector<llvm::Type*> fields(kNumStepArgs, ptr);
    fields[kNRows] = fields[kNLogitRows] = i64;
    fields_ = fields;
    step_args_ty_ = llvm::StructType::create(ctx_, fields, "kiln_step_args");

    KILN_ASSIGN(step_, lower_function(main_, "kiln_step." + main_.name()));
    for (const Graph* v : opts.tree_verify) {
      KILN_TRY(same_layout(*v, "a DS2D verify graph"));
      KILN_ASSIGN(TreeShape tree, graph_tree(*v));
      KILN_ASSIGN(llvm::Function* f, lower_function(*v, fmt::format("kiln_verify{}.{}", tree.size(), main_.name())));
      verify_.push_back({tree, f});
    }
    if (opts.draft) {
      KILN_TRY(same_layout(*opts.draft, "the DS2D draft graph"));
      KILN_ASSIGN(draft_, lower_function(*opts.draft, "kiln_draft." + main_.name()));
    }
    if (opts.step_base) {
      KILN_TRY(same_layout(*opts.step_base, "the base step graph"));
      KILN_ASSIGN(step_base_, lower_function(*opts.step_base, "kiln_step_base." + main_.name()));
    }
    g_ = &main_;

    KILN_TRY(emit_descriptor(opts));
    *kernels = wrappers_.size();
    return Status::success();
  }

 private:
  llvm::LLVMContext& ctx_;
  llvm::Module& m_;
  const Graph& main_;  // the step graph: its limits and layout go in the descriptor
  const Graph* g_;     // the graph being lowered
  const TargetProfile& p_;
  std::string cpu_features_;
  llvm::IRBuilder<> b_;
  std::vector<llvm::Type*> fields_;
  llvm::StructType* step_args_ty_ = nullptr;
  llvm::Function* step_ = nullptr;
  llvm::Function* draft_ = nullptr;
  llvm::Function* step_base_ = nullptr;
  std::vector<std::pair<TreeShape, llvm::Function*>> verify_;  // in the order given (ascending)
  // Constant depth / ancestor-mask arrays of each tree, bound into the tree kernels' wrappers.
  std::map<std::vector<int32_t>, std::pair<llvm::GlobalVariable*, llvm::GlobalVariable*>> tree_consts_;
  int64_t max_arena_ = 0;
  Value *args_ = nullptr, *tid_ = nullptr, *nth_ = nullptr;
  Value* field_[kNumStepArgs] = {};
  std::unordered_map<const Node*, Value*> ptr_;   // data pointer of each value
  std::unordered_map<const Node*, Value*> rows_;  // its row count (i64)
  std::unordered_map<const Node*, Region> region_;
  std::map<std::string, llvm::Function*> wrappers_;
  std::vector<Region> written_, read_;  // since the last barrier
  std::unordered_map<const Node*, size_t> n_users_;

  // add(matmul(x, W), lora(x, ...)) with the matmul and the lora used only there: lowered
  // as one kiln_lora_add (the lora node emits nothing). Returns the lora node, or null.
  const Node* fused_lora(const Node* add) {
    if (add->op() != Op::Add || add->operands().size() != 2) return nullptr;
    const Node* m = add->operand(0);
    const Node* l = add->operand(1);
    if (m->op() != Op::MatMul || l->op() != Op::Lora || l->operand(0) != m->operand(0)) return nullptr;
    if (n_users_[m] != 1 || n_users_[l] != 1 || m->type() != add->type() || l->type() != add->type()) return nullptr;
    if (m->str_attr("place") || l->str_attr("place")) return nullptr;
    return l;
  }
  bool fused_into_add(const Node* l) { return l->op() == Op::Lora && lora_add_of_.count(l) > 0; }
  std::unordered_map<const Node*, const Node*> lora_add_of_;  // fused lora -> its add

  // fuse-qkv: a leader rms_matmul (attribute qkv = 1) and the two rms_matmuls after it,
  // on the same x, norm weight, eps, weight type and K, lowered as one kiln_rms_matmul3
  // call. Anything else (a group broken up by later passes) lowers node by node.
  std::unordered_map<const Node*, std::pair<const Node*, const Node*>> qkv_group_;
  std::unordered_map<const Node*, bool> qkv_follower_;
  void find_qkv_groups(const std::vector<Node*>& ns) {
    qkv_group_.clear();
    qkv_follower_.clear();
    for (size_t i = 0; i + 2 < ns.size(); ++i) {
      const Node* a = ns[i];
      if (a->op() != Op::RmsMatMul || a->int_attr("qkv").value_or(0) != 1) continue;
      bool ok = true;
      for (size_t j = i + 1; j <= i + 2; ++j) {
        const Node* b = ns[j];
        ok &= b->op() == Op::RmsMatMul && b->operand(0) == a->operand(0) && b->operand(1) == a->operand(1) &&
              b->float_attr("eps") == a->float_attr("eps") && b->operand(2)->type().dtype == a->operand(2)->type().dtype &&
              b->operand(2)->type().shape[1] == a->operand(2)->type().shape[1] && !b->str_attr("place");
      }
      if (!ok || a->str_attr("place")) continue;
      qkv_group_[a] = {ns[i + 1], ns[i + 2]};
      qkv_follower_[ns[i + 1]] = qkv_follower_[ns[i + 2]] = true;
    }
  }

  // One entry function (void (const kiln_step_args*, i32 tid, i32 nth)) running `g`.
  Result<llvm::Function*> lower_function(const Graph& g, const std::string& name) {
    g_ = &g;
    ptr_.clear();
    rows_.clear();
    region_.clear();
    written_.clear();
    read_.clear();
    auto* i32 = b_.getInt32Ty();
    auto* fn_ty = llvm::FunctionType::get(b_.getVoidTy(), {b_.getPtrTy(), i32, i32}, false);
    llvm::Function* fn = llvm::Function::Create(fn_ty, llvm::Function::InternalLinkage, name, m_);
    fn->addFnAttr("no-builtins");
    args_ = fn->getArg(0);
    tid_ = fn->getArg(1);
    nth_ = fn->getArg(2);
    args_->setName("args");
    tid_->setName("tid");
    nth_->setName("nth");
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn));
    for (int f = 0; f < kNumStepArgs; ++f)
      field_[f] = b_.CreateLoad(fields_[f], b_.CreateStructGEP(step_args_ty_, args_, f));
    n_users_.clear();
    lora_add_of_.clear();
    for (auto& [n, us] : g.users()) n_users_[n] = us.size();
    for (const Node* n : g.nodes())
      if (const Node* l = fused_lora(n)) lora_add_of_[l] = n;
    find_qkv_groups(g.nodes());
    for (const Node* n : g.nodes()) KILN_TRY(lower_node(n));
    b_.CreateRetVoid();
    max_arena_ = std::max(max_arena_, g.int_attr("arena_bytes").value_or(0));
    return fn;
  }

  // Entry points share the step's weights, KV cache and thread count.
  Status same_layout(const Graph& g, std::string_view what) {
    for (const char* k : {"kv_stream_bytes", "kv_bytes", "weights_bytes", "max_threads", "max_rows"})
      if (g.int_attr(k) != main_.int_attr(k))
        return make_error("codegen: {} differs from the step graph in {} ({} vs {})", what, k,
                          g.int_attr(k).value_or(-1), main_.int_attr(k).value_or(-1));
    if (g.weights() != main_.weights())
      return make_error("codegen: {} does not share the step graph's frozen weights", what);
    return Status::success();
  }

  // A KV cache's kernels ("" for f32, "_f16") and its stream stride in elements (a stream's
  // region, kv_stream_bytes, holds every layer's caches; plan-memory aligns each to 64 bytes).
  struct KvCache {
    std::string suffix;
    int64_t stream_stride;
  };
  Result<KvCache> kv_cache(const Node* cache) const {
    const DType t = cache->type().dtype;
    const int64_t elem = (int64_t)dtype_bytes(t, 1), bytes = *g_->int_attr("kv_stream_bytes");
    if ((t != DType::F32 && t != DType::F16) || bytes % elem)
      return make_error("codegen: a KV cache must be f32 or f16 with whole elements per stream region (at {})", cache->loc());
    return KvCache{t == DType::F16 ? "_f16" : "", bytes / elem};
  }

  // The one tree of a verify graph (every kv_write and attention must carry it).
  static Result<TreeShape> graph_tree(const Graph& g) {
    std::optional<TreeShape> tree;
    for (const Node* n : g.nodes()) {
      if (n->op() != Op::KvWrite && n->op() != Op::Attention) continue;
      KILN_ASSIGN(TreeShape t, node_tree(n));
      if (!t.size() || (tree && t.parent != tree->parent))
        return make_error("codegen: a verify graph needs the same tree_parent on every kv_write and attention (at {})", n->loc());
      tree = t;
    }
    if (!tree) return make_error("codegen: the verify graph has no attention");
    return *tree;
  }

  std::pair<llvm::GlobalVariable*, llvm::GlobalVariable*> tree_constants(const TreeShape& t) {
    auto& c = tree_consts_[t.parent];
    if (!c.first) {
      std::string prefix = fmt::format("tree{}.{}", t.size(), tree_consts_.size());
      auto make = [&](llvm::Constant* init, const std::string& n) {
        auto* gv = new llvm::GlobalVariable(m_, init->getType(), true, llvm::GlobalValue::PrivateLinkage, init, n);
        gv->setAlignment(llvm::Align(64));
        bound_.insert(gv);
        return gv;
      };
      c.first = make(llvm::ConstantDataArray::get(ctx_, llvm::ArrayRef<int32_t>(t.depth)), prefix + ".depth");
      c.second = make(llvm::ConstantDataArray::get(ctx_, llvm::ArrayRef<uint64_t>(t.ancestors)), prefix + ".anc");
    }
    return c;
  }

  // The LoRA kernels keep a row's shrink (up to 64 floats, KILN_LORA_MAX_RANK in
  // kernels/lora_rows.h) on the stack: a larger compiled rank is refused at lowering.
  Status check_lora_rank(const Node* n, int64_t R) {
    if (R > 64) return fail(n, fmt::format("rank {} is above the kernel's 64", R));
    return Status::success();
  }
  Error fail(const Node* n, const std::string& msg) {
    return make_error("codegen: {} at {}: {}", op_name(n->op()), n->loc(), msg);
  }
  llvm::ConstantInt* i64c(int64_t v) { return b_.getInt64(v); }
  llvm::Constant* f32c(double v) { return llvm::ConstantFP::get(b_.getFloatTy(), v); }
  Value* byte_ptr(Value* base, int64_t offset) { return b_.CreateConstInBoundsGEP1_64(b_.getInt8Ty(), base, offset); }

  // Scalars known at compile time are bound into the wrapper; everything else (pointers,
  // including those to constant data, and run-time counts) stays a parameter — except a
  // tree's depth and mask arrays, bound so LLVM specialises the tree kernels on them.
  std::set<const Value*> bound_;
  bool is_static(Value* v) const {
    return llvm::isa<llvm::ConstantInt>(v) || llvm::isa<llvm::ConstantFP>(v) || bound_.count(v);
  }

  // Calls `kernel` through a wrapper specialised on the arguments that are constants.
  Status call(const Node* n, const std::string& kernel, std::vector<Value*> args) {
    llvm::Function* k = m_.getFunction(kernel);
    if (!k) return fail(n, fmt::format("kernel {} is missing from the kernel library", kernel));
    args.push_back(tid_);
    args.push_back(nth_);
    if (args.size() != k->arg_size())
      return fail(n, fmt::format("kernel {} takes {} arguments, codegen passes {}", kernel, k->arg_size(), args.size()));
    std::string key = "k." + kernel.substr(5);  // drop "kiln_"
    std::vector<llvm::Type*> dyn_types;
    std::vector<Value*> dyn;
    for (size_t i = 0; i < args.size(); ++i) {
      if (!is_static(args[i])) {
        dyn_types.push_back(k->getArg((unsigned)i)->getType());
        dyn.push_back(args[i]);
      } else if (auto* ci = llvm::dyn_cast<llvm::ConstantInt>(args[i])) {
        key += fmt::format(".{}", ci->getSExtValue());
      } else if (auto* gv = llvm::dyn_cast<llvm::GlobalVariable>(args[i])) {
        key += "." + gv->getName().str();
      } else {
        key += fmt::format(".{}", llvm::cast<llvm::ConstantFP>(args[i])->getValueAPF().convertToFloat());
      }
    }
    llvm::Function*& w = wrappers_[key];
    if (!w) {
      auto* ty = llvm::FunctionType::get(b_.getVoidTy(), dyn_types, false);
      w = llvm::Function::Create(ty, llvm::Function::InternalLinkage, key, m_);
      w->addFnAttr(llvm::Attribute::NoInline);
      // Like the kernels: loops must stay loops, not become calls to memset/memcpy.
      w->addFnAttr("no-builtins");
      llvm::IRBuilder<> wb(llvm::BasicBlock::Create(ctx_, "entry", w));
      std::vector<Value*> full;
      unsigned next = 0;
      for (Value* a : args) full.push_back(is_static(a) ? a : w->getArg(next++));
      wb.CreateCall(k, full);
      wb.CreateRetVoid();
    }
    b_.CreateCall(w, dyn);
    return Status::success();
  }

  // Emits a barrier if `reads`/`writes` conflict with accesses since the last one.
  void sync(const std::vector<Region>& reads, const std::vector<Region>& writes) {
    bool need = false;
    for (auto& r : reads)
      for (auto& w : written_) need |= r.overlaps(w);
    for (auto& w : writes) {
      for (auto& r : read_) need |= w.overlaps(r);
      for (auto& w2 : written_) need |= w.overlaps(w2);
    }
    if (need) {
      b_.CreateCall(llvm::FunctionType::get(b_.getVoidTy(), {b_.getPtrTy()}, false), field_[kBarrier],
                    {field_[kBarrierCtx]});
      written_.clear();
      read_.clear();
    }
    read_.insert(read_.end(), reads.begin(), reads.end());
    written_.insert(written_.end(), writes.begin(), writes.end());
  }

  Result<int64_t> cols(const Node* n) {
    const auto& s = n->type().shape;
    if (s.empty()) return fail(n, "rank-0 values are not supported");
    int64_t c = 1;
    for (size_t d = 1; d < s.size(); ++d) c *= s[d];
    return s.size() == 1 ? (s[0] == kDynamic ? 1 : s[0]) : c;
  }

  // Places a computed value: in the arena, or in the caller's logits buffer.
  Status place(const Node* n) {
    if (n->str_attr("place") == "logits") {
      ptr_[n] = field_[kLogits];
      region_[n] = {2, 0, INT64_MAX};
      return Status::success();
    }
    auto off = n->int_attr("arena_offset");
    if (!off) return fail(n, "has no arena_offset: run plan-memory first");
    ptr_[n] = byte_ptr(field_[kArena], *off);
    KILN_ASSIGN(int64_t c, cols(n));
    int64_t max_rows = g_->int_attr("max_rows").value_or(1);
    int64_t r = n->type().shape[0] == kDynamic ? max_rows : n->type().shape[0];
    region_[n] = {0, *off, *off + r * c * 4};
    return Status::success();
  }

  std::vector<Region> regions_of(const std::vector<Node*>& ops) {
    std::vector<Region> out;
    for (const Node* o : ops)
      if (auto it = region_.find(o); it != region_.end()) out.push_back(it->second);
    return out;
  }

  // The matmul kernel for weights of type wt: for q4_0/q4_1/q8_0 the int8-activation
  // variant (codegen/kernels/qmatmul.c) with the best integer dot product the profile's
  // features have — avx512vnni+avx512vl > avxvnni > avx2 on x86-64, i8mm (smmla) > dotprod on aarch64 —
  // unless the graph sets int8_activations = 0; otherwise, and for float weights, the
  // float-activation kernel (matmul.c). Targets without an int8 dot keep the float
  // kernel: the portable int8 variant (_q8_ref) is only the tests' reference.
  std::string matmul_kernel(const Node* w) const {
    const DType wt = w->type().dtype;
    const int64_t K = w->type().shape[1];
    const bool packed = w->int_attr("packed_rows").value_or(0) > 0;
    std::string base = "kiln_matmul_" + kernel_suffix(wt) + (packed ? "x16" : "");
    bool quant = wt == DType::Q4_0 || wt == DType::Q4_1 || wt == DType::Q8_0;
    if (!quant || g_->int_attr("int8_activations").value_or(1) == 0 || K % 32 != 0) return packed ? "" : base;
    auto has = [&](std::string_view f) { return has_feature(p_, f); };
    if (p_.triple.rfind("x86_64", 0) == 0) {
      if (has("+avx512vnni") && has("+avx512vl") && has("+avx512bw")) return base + "_q8_vnni";
      if (packed) return "";
      if (has("+avxvnni") && has("+avx2")) return base + "_q8_avxvnni";
      if (has("+avx2")) return base + "_q8_avx2";
    } else if (p_.triple.rfind("aarch64", 0) == 0) {
      if (packed) return has("+dotprod") ? base + "_q8_dotprod" : "";
      // smmla needs sdot too (a row of x without a partner takes sdot; qmatmul.c).
      if (has("+i8mm") && has("+dotprod")) return base + "_q8_i8mm";
      if (has("+dotprod")) return base + "_q8_dotprod";
    }
    return packed ? "" : base;
  }
  // Packed weights (pack-weights) have kernels only with int8 activations, on AVX512-VNNI and
  // AArch64 dotprod (kiln compile packs only there).
  Status no_packed_kernel(const Node* n, const Node* w) {
    return fail(n, fmt::format("weight \"{}\" is packed (packed_rows) but profile {} has no packed kernel for {}: "
                               "compile with --pack-weights=off",
                               *w->str_attr("name"), p_.name, dtype_name(w->type().dtype)));
  }

  Status lower_node(const Node* n) {
    const auto& o = n->operands();
    if (fused_into_add(n)) return Status::success();  // computed by its add
    if (qkv_follower_.count(n)) return Status::success();  // computed by its group's leader
    if (auto it = qkv_group_.find(n); it != qkv_group_.end()) return lower_qkv(n, it->second.first, it->second.second);
    if (n->op() == Op::Add)
      if (const Node* l = fused_lora(n)) return lower_lora_add(n, o[0], l);
    switch (n->op()) {
      case Op::Input: {
        auto name = *n->str_attr("name");
        if (name.substr(0, 5) == "lora.") {  // adapter factors: a fixed offset in args->adapters
          auto off = n->int_attr("adapter_offset");
          if (!off) return fail(n, fmt::format("adapter input \"{}\" has no adapter_offset: run plan-memory first", name));
          ptr_[n] = byte_ptr(field_[kAdapters], *off);
          rows_[n] = i64c(n->type().shape.empty() ? 1 : n->type().shape[0]);
          return Status::success();
        }
        int f = name == "tokens" ? kTokens : name == "positions" ? kPositions : name == "streams" ? kStreams
              : name == "logit_rows" ? kLogitRows : name == "adapter_slots" ? kAdapterSlots : -1;
        if (f < 0) return fail(n, fmt::format("input \"{}\" is not part of the step interface", name));
        ptr_[n] = field_[f];
        rows_[n] = field_[f == kLogitRows ? kNLogitRows : kNRows];
        return Status::success();
      }
      case Op::Weight: {
        auto off = n->int_attr("offset");
        if (!off) return fail(n, "has no offset: run freeze-base first");
        ptr_[n] = byte_ptr(field_[kWeights], *off);
        return Status::success();
      }
      case Op::Constant: {
        const DenseData* d = n->dense_attr("value");
        llvm::Constant* init = d->dtype == DType::I32
            ? llvm::ConstantDataArray::get(ctx_, llvm::ArrayRef<int32_t>(d->i32))
            : llvm::ConstantDataArray::get(ctx_, llvm::ArrayRef<float>(d->f32));
        auto* gv = new llvm::GlobalVariable(m_, init->getType(), true, llvm::GlobalValue::PrivateLinkage, init, "const");
        gv->setAlignment(llvm::Align(64));
        ptr_[n] = gv;
        rows_[n] = i64c(n->type().shape.empty() ? 1 : n->type().shape[0]);
        return Status::success();
      }
      case Op::State: {
        auto off = n->int_attr("kv_offset");
        if (!off) return fail(n, "has no kv_offset: run plan-memory first");
        ptr_[n] = byte_ptr(field_[kKv], *off);
        const auto& s = n->type().shape;
        region_[n] = {1, *off, *off + (int64_t)dtype_bytes(n->type().dtype, (uint64_t)(s[1] * s[2]))};
        return Status::success();
      }
      case Op::Output:
        if (n->str_attr("name") != "logits" || o[0]->str_attr("place") != "logits")
          return fail(n, "codegen supports one output, \"logits\", placed by plan-memory");
        return Status::success();
      case Op::KvWrite: {
        ptr_[n] = ptr_[o[0]];
        region_[n] = region_[o[0]];
        if (o.size() < 4) return fail(n, "needs a streams operand ([S,C,F] cache)");
        KILN_ASSIGN(KvCache kv, kv_cache(o[0]));
        const int64_t stride = kv.stream_stride;
        sync(regions_of(o), {region_[o[0]]});
        auto tree = node_tree(n);
        if (!tree.ok()) return fail(n, tree.error().message);
        if (tree->size())
          return call(n, "kiln_kv_write_tree" + kv.suffix, {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], ptr_[o[3]], rows_[o[1]],
                                                i64c(o[0]->type().shape[2]), i64c(stride), i64c(tree->size()),
                                                tree_constants(*tree).first});
        return call(n, "kiln_kv_write" + kv.suffix, {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], ptr_[o[3]], rows_[o[1]],
                                         i64c(o[0]->type().shape[2]), i64c(stride)});
      }
      case Op::Dequant:
        return fail(n, "dequant has no kernel: run fuse-dequant-matmul, which folds it into its matmuls");
      case Op::RmsMatMul: case Op::MatMulSwiGlu: case Op::Embed: case Op::Lora: case Op::RmsNorm: case Op::MatMul: case Op::Add: case Op::Mul: case Op::Silu:
      case Op::Rope: case Op::LastRow: case Op::GatherRows: case Op::Attention:
        break;
    }

    KILN_TRY(place(n));
    Value* y = ptr_[n];
    std::vector<Region> writes = {region_[n]};
    Value* T = nullptr;
    switch (n->op()) {
      case Op::Embed: case Op::GatherRows: T = rows_[o[1]]; break;
      case Op::LastRow: T = i64c(1); break;
      default: T = rows_[o[0]]; break;
    }
    rows_[n] = n->op() == Op::LastRow ? i64c(1) : T;
    if (n->op() == Op::Attention) {
      auto soff = n->int_attr("scratch_offset");
      if (!soff) return fail(n, "has no scratch_offset: run plan-memory first");
      int64_t C = o[1]->type().shape[1];
      writes.push_back({0, *soff, *soff + g_->int_attr("max_threads").value_or(1) * C * 4});
    }
    sync(regions_of(o), writes);
    KILN_ASSIGN(int64_t F, cols(n));
    switch (n->op()) {
      case Op::Embed: {
        const bool packed = o[0]->int_attr("packed_rows").value_or(0) > 0;
        return call(n, "kiln_embed_" + kernel_suffix(o[0]->type().dtype) + (packed ? "x16" : ""),
                    {ptr_[o[0]], ptr_[o[1]], y, T, i64c(F)});
      }
      case Op::RmsNorm:
        if (o[1]->type().dtype != DType::F32) return fail(n, "norm weight must be f32 (freeze-base converts it)");
        return call(n, "kiln_rms_norm", {ptr_[o[0]], ptr_[o[1]], y, T, i64c(F), f32c(*n->float_attr("eps"))});
      case Op::MatMul: {
        std::string k = matmul_kernel(o[1]);
        if (k.empty()) return no_packed_kernel(n, o[1]);
        return call(n, k, {ptr_[o[0]], ptr_[o[1]], y, T, i64c(o[1]->type().shape[1]), i64c(o[1]->type().shape[0])});
      }
      case Op::RmsMatMul: {  // only the int8 kernels have the fused form
        if (o[1]->type().dtype != DType::F32) return fail(n, "norm weight must be f32 (freeze-base converts it)");
        std::string k = matmul_kernel(o[2]);
        if (k.empty()) return no_packed_kernel(n, o[2]);
        if (k.find("_q8_") == std::string::npos)
          return fail(n, "rms_matmul needs int8-activation kernels for its weight type on this profile");
        k.replace(0, 5, "kiln_rms_");
        return call(n, k, {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], y, T, i64c(o[2]->type().shape[1]),
                           i64c(o[2]->type().shape[0]), f32c(*n->float_attr("eps"))});
      }
      case Op::MatMulSwiGlu: {  // only the int8 kernels have the fused form
        std::string k = matmul_kernel(o[1]);
        if (k.empty()) return no_packed_kernel(n, o[1]);
        if (k != matmul_kernel(o[2])) return fail(n, "gate and up weights must have one type and layout");
        if (k.find("_q8_") == std::string::npos)
          return fail(n, "matmul_swiglu needs int8-activation kernels for its weight type on this profile");
        if (o.size() == 11) {  // with the LoRA side paths of gate and up
          const auto& as = o[3]->type().shape;  // [K, R, in]
          KILN_TRY(check_lora_rank(n, as[1]));
          k.replace(0, 12, "kiln_matmul_swiglu_lora_");
          std::vector<Value*> args = {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]]};
          for (size_t i = 3; i < 11; ++i) args.push_back(ptr_[o[i]]);
          args.insert(args.end(), {y, T, i64c(o[1]->type().shape[1]), i64c(o[1]->type().shape[0]), i64c(as[1])});
          return call(n, k, args);
        }
        k.replace(0, 12, "kiln_matmul_swiglu_");
        return call(n, k, {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], y, T, i64c(o[1]->type().shape[1]),
                           i64c(o[1]->type().shape[0])});
      }
      case Op::Add:
      case Op::Mul: {
        Value* n_el = b_.CreateMul(T, i64c(F));
        const Node* rhs = o[1];
        bool row = rhs->type().shape.size() == 1 || (rhs->type().shape[0] == 1 && n->type().shape[0] != 1);
        Value* bn = row ? (Value*)i64c(F) : n_el;
        return call(n, n->op() == Op::Add ? "kiln_add" : "kiln_mul", {ptr_[o[0]], ptr_[o[1]], y, n_el, bn});
      }
      case Op::Silu:
        return call(n, "kiln_silu", {ptr_[o[0]], y, b_.CreateMul(T, i64c(F))});
      case Op::Rope:
        return call(n, "kiln_rope", {ptr_[o[0]], y, ptr_[o[1]], T, i64c(F), i64c(*n->int_attr("head_dim")),
                                     i64c(*n->int_attr("n_rot")), f32c(*n->float_attr("theta")),
                                     o.size() > 2 ? ptr_[o[2]] : llvm::ConstantPointerNull::get(b_.getPtrTy())});
      case Op::LastRow:
        return call(n, "kiln_last_row", {ptr_[o[0]], y, rows_[o[0]], i64c(F)});
      case Op::GatherRows:
        return call(n, "kiln_gather_rows", {ptr_[o[0]], ptr_[o[1]], y, T, i64c(F)});
      case Op::Lora: {
        const auto& as = o[1]->type().shape;  // [K, R, in]
        const auto& bs = o[2]->type().shape;  // [K, R, out]
        if (as.size() != 3 || bs.size() != 3) return fail(n, "a and b must be [K,R,in] and [K,R,out]");
        KILN_TRY(check_lora_rank(n, as[1]));
        return call(n, "kiln_lora", {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], ptr_[o[3]], ptr_[o[4]], ptr_[o[5]], y, T,
                                     i64c(as[2]), i64c(bs[2]), i64c(as[1])});
      }
      case Op::Attention: {
        if (o.size() < 5) return fail(n, "needs a streams operand ([S,C,F] cache)");
        int64_t C = o[1]->type().shape[1];
        KILN_ASSIGN(KvCache kv, kv_cache(o[1]));
        const int64_t stride = kv.stream_stride;
        Value* scratch = byte_ptr(field_[kArena], *n->int_attr("scratch_offset"));
        auto tree = node_tree(n);
        if (!tree.ok()) return fail(n, tree.error().message);
        if (tree->size()) {
          auto [depth, anc] = tree_constants(*tree);
          return call(n, "kiln_tree_attention" + kv.suffix,
                      {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], ptr_[o[3]], ptr_[o[4]], y, scratch, T, i64c(C),
                       i64c(*n->int_attr("n_head")), i64c(*n->int_attr("n_kv_head")),
                       i64c(*n->int_attr("head_dim")), i64c(stride), i64c(tree->size()), depth, anc});
        }
        return call(n, "kiln_attention" + kv.suffix,
                    {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], ptr_[o[3]], ptr_[o[4]], y, scratch, T, i64c(C),
                     i64c(*n->int_attr("n_head")), i64c(*n->int_attr("n_kv_head")),
                     i64c(*n->int_attr("head_dim")), i64c(stride)});
      }
      case Op::Input: case Op::Weight: case Op::Constant: case Op::State: case Op::KvWrite:
      case Op::Output: case Op::Dequant:
        break;
    }
    return fail(n, "not lowered");
  }

  // Three rms_matmuls of one fuse-qkv group: one call, x normalised and quantized once.
  Status lower_qkv(const Node* a, const Node* b, const Node* c) {
    const auto& o = a->operands();
    if (o[1]->type().dtype != DType::F32) return fail(a, "norm weight must be f32 (freeze-base converts it)");
    std::string k = matmul_kernel(o[2]);
    if (k.empty()) return no_packed_kernel(a, o[2]);
    if (k != matmul_kernel(b->operand(2)) || k != matmul_kernel(c->operand(2)))
      return fail(a, "the q, k and v weights of a fuse-qkv group must have one type and layout");
    if (k.find("_q8_") == std::string::npos)
      return fail(a, "rms_matmul needs int8-activation kernels for its weight type on this profile");
    k = "kiln_rms_matmul3_" + k.substr(std::string("kiln_matmul_").size());
    std::vector<Region> writes;
    for (const Node* n : {a, b, c}) {
      KILN_TRY(place(n));
      writes.push_back(region_[n]);
      rows_[n] = rows_[o[0]];
    }
    sync(regions_of({o[0], o[1], o[2], b->operand(2), c->operand(2)}), writes);
    Value* T = rows_[o[0]];
    return call(a, k, {ptr_[o[0]], ptr_[o[1]], ptr_[o[2]], ptr_[b->operand(2)], ptr_[c->operand(2)], ptr_[a], ptr_[b],
                       ptr_[c], T, i64c(o[2]->type().shape[1]), i64c(o[2]->type().shape[0]),
                       i64c(b->operand(2)->type().shape[0]), i64c(c->operand(2)->type().shape[0]),
                       f32c(*a->float_attr("eps"))});
  }

  // y = m + lora(...): reads of m are not hazards (each thread reads the columns it
  // wrote in the matmul), but m stays recorded as read for later writers.
  Status lower_lora_add(const Node* n, const Node* m, const Node* l) {
    const auto& lo = l->operands();
    const auto& as = lo[1]->type().shape;  // [K, R, in]
    const auto& bs = lo[2]->type().shape;  // [K, R, out]
    if (as.size() != 3 || bs.size() != 3) return fail(l, "a and b must be [K,R,in] and [K,R,out]");
    KILN_TRY(check_lora_rank(l, as[1]));
    KILN_TRY(place(n));
    sync(regions_of(lo), {region_[n]});
    read_.push_back(region_[m]);
    Value* T = rows_[lo[0]];
    rows_[n] = T;
    return call(n, "kiln_lora_add", {ptr_[lo[0]], ptr_[lo[1]], ptr_[lo[2]], ptr_[lo[3]], ptr_[lo[4]], ptr_[lo[5]],
                                     ptr_[m], ptr_[n], T, i64c(as[2]), i64c(bs[2]), i64c(as[1])});
  }

  llvm::Constant* cstring(const std::string& s, const std::string& name) {
    auto* init = llvm::ConstantDataArray::getString(ctx_, s);
    auto* gv = new llvm::GlobalVariable(m_, init->getType(), true, llvm::GlobalValue::PrivateLinkage, init, name);
    return gv;
  }

  Status emit_descriptor(const CodegenOptions& opts) {
    auto* ptr = b_.getPtrTy();
    auto* i32 = b_.getInt32Ty();
    auto* i64 = b_.getInt64Ty();
    // kiln_compiled_model, field for field (model_abi.h).
    auto* ty = llvm::StructType::create(ctx_, {i32, i32, i64, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64,
                                               i64, i64, i64, i64, ptr, i64, ptr, i64,
                                               i64, i64, i64, i64, ptr, i64, ptr, i64, ptr, ptr, ptr},
                                        "kiln_compiled_model");
    // kiln_tree_template table {n_nodes, parent, depth, verify}, ascending n_nodes.
    auto* tmpl_ty = llvm::StructType::get(ctx_, {i32, ptr, ptr, ptr});
    std::vector<llvm::Constant*> tmpls;
    for (size_t i = 0; i < verify_.size(); ++i) {
      const TreeShape& t = verify_[i].first;
      if (i && t.size() <= verify_[i - 1].first.size())
        return make_error("codegen: DS2D verify graphs must come in ascending template size");
      auto* parent = new llvm::GlobalVariable(m_, llvm::ArrayType::get(i32, t.parent.size()), true,
                                              llvm::GlobalValue::PrivateLinkage,
                                              llvm::ConstantDataArray::get(ctx_, llvm::ArrayRef<int32_t>(t.parent)),
                                              fmt::format("tree{}.parent", t.size()));
      tmpls.push_back(llvm::ConstantStruct::get(
          tmpl_ty, {llvm::ConstantInt::get(i32, t.size()), parent, tree_constants(t).first, verify_[i].second}));
    }
    auto* tmpls_ty = llvm::ArrayType::get(tmpl_ty, tmpls.size());
    auto* tmpls_gv = new llvm::GlobalVariable(m_, tmpls_ty, true, llvm::GlobalValue::PrivateLinkage,
                                              llvm::ConstantArray::get(tmpls_ty, tmpls), "tree_templates");
    // kiln_kv_block table: each state buffer's offset and row size within a stream.
    auto* block_ty = llvm::StructType::get(ctx_, {i64, i64});
    std::vector<llvm::Constant*> blocks;
    for (const Node* s : g_->nodes_of(Op::State)) {
      auto off = s->int_attr("kv_offset");
      if (!off) return make_error("codegen: state at {} has no kv_offset (run plan-memory)", s->loc());
      blocks.push_back(llvm::ConstantStruct::get(
          block_ty, {llvm::ConstantInt::get(i64, *off), llvm::ConstantInt::get(i64, (int64_t)dtype_bytes(s->type().dtype, (uint64_t)s->type().shape.back()))}));
    }
    auto* blocks_ty = llvm::ArrayType::get(block_ty, blocks.size());
    auto* blocks_gv = new llvm::GlobalVariable(m_, blocks_ty, true, llvm::GlobalValue::PrivateLinkage,
                                               llvm::ConstantArray::get(blocks_ty, blocks), "kv_blocks");
    // kiln_lora_target table (codegen/lora_table.h).
    KILN_ASSIGN(LoraTable lt, lora_table(main_));
    auto* lora_ty = llvm::StructType::get(ctx_, {i32, i32, i64, i64, i64, i64, i64, i64, i64});
    std::vector<llvm::Constant*> lora_rows;
    for (const kiln_lora_target& e : lt.targets) {
      auto u = [&](uint64_t v) { return llvm::ConstantInt::get(i64, v); };
      lora_rows.push_back(llvm::ConstantStruct::get(
          lora_ty, {llvm::ConstantInt::get(i32, e.layer), llvm::ConstantInt::get(i32, e.module), u(e.in), u(e.out),
                    u(e.a_offset), u(e.b_offset), u(e.a_slot_stride), u(e.b_slot_stride), u(e.rank_offset)}));
    }
    auto* lora_arr_ty = llvm::ArrayType::get(lora_ty, lora_rows.size());
    auto* lora_gv = new llvm::GlobalVariable(m_, lora_arr_ty, true, llvm::GlobalValue::PrivateLinkage,
                                             llvm::ConstantArray::get(lora_arr_ty, lora_rows), "lora_targets");
    auto attr = [&](const char* k) -> Result<int64_t> {
      auto v = g_->int_attr(k);
      if (!v) return make_error("codegen: the graph lacks attribute {} (run freeze-base and plan-memory)", k);
      return *v;
    };
    const Node* logits = g_->find_output("logits");
    if (!logits) return make_error("codegen: the graph has no output \"logits\"");
    int64_t n_layer = (int64_t)g_->nodes_of(Op::Attention).size();
    int64_t streams = 1, ctxlen = 0;
    for (const Node* s : g_->nodes_of(Op::State)) streams = s->type().shape[0], ctxlen = s->type().shape[1];
    KILN_ASSIGN(int64_t max_rows, attr("max_rows"));
    KILN_ASSIGN(int64_t max_threads, attr("max_threads"));
    KILN_ASSIGN(int64_t weights_bytes, attr("weights_bytes"));
    KILN_ASSIGN(int64_t arena_bytes, attr("arena_bytes"));
    arena_bytes = std::max(arena_bytes, max_arena_);  // the draft graph has its own plan
    KILN_ASSIGN(int64_t kv_bytes, attr("kv_bytes"));
    KILN_ASSIGN(int64_t kv_stream_bytes, attr("kv_stream_bytes"));
    auto c64 = [&](int64_t v) { return llvm::ConstantInt::get(i64, v); };
    llvm::Constant* init = llvm::ConstantStruct::get(
        ty, {llvm::ConstantInt::get(i32, KILN_ABI_VERSION), llvm::ConstantInt::get(i32, opts.format_version),
             llvm::ConstantInt::get(i64, opts.model_hash), cstring(g_->name(), "name"), cstring(p_.triple, "target"),
             cstring(p_.name, "profile"), c64(logits->type().shape.back()), c64(n_layer), c64(max_rows),
             c64(streams), c64(ctxlen), c64(max_threads), c64(weights_bytes), c64(arena_bytes), c64(kv_bytes),
             c64(kv_stream_bytes), step_, c64((int64_t)blocks.size()), blocks_gv,
             c64(g_->int_attr("adapter_bytes").value_or(0)), c64(lt.slots), c64(lt.rank),
             c64((int64_t)lt.scale_offset), c64((int64_t)lt.targets.size()), lora_gv, c64((int64_t)tmpls.size()),
             tmpls.empty() ? (llvm::Constant*)llvm::ConstantPointerNull::get(ptr) : tmpls_gv, c64(opts.draft_layers),
             draft_ ? (llvm::Constant*)draft_ : llvm::ConstantPointerNull::get(ptr),
             step_base_ ? (llvm::Constant*)step_base_ : llvm::ConstantPointerNull::get(ptr),
             cstring(cpu_features_, "cpu_features")});
    auto* gv = new llvm::GlobalVariable(m_, ty, true, llvm::GlobalValue::ExternalLinkage, init, opts.symbol);
    gv->setAlignment(llvm::Align(8));
    return Status::success();
  }
};

void init_llvm_targets() {
  static bool done = [] {
    llvm::InitializeAllTargetInfos();
    llvm::InitializeAllTargets();
    llvm::InitializeAllTargetMCs();
    llvm::InitializeAllAsmPrinters();
    return true;
  }();
  (void)done;
}

std::string arch_of(const std::string& triple) { return triple.substr(0, triple.find('-')); }

}  // namespace

Result<CompiledCode> compile_graph(const Graph& g, const TargetProfile& profile, const CodegenOptions& opts) {
  init_llvm_targets();
  std::string err;
  const llvm::Target* target = llvm::TargetRegistry::lookupTarget(profile.triple, err);
  if (!target) return make_error("profile '{}': target {}: {}", profile.name, profile.triple, err);
  llvm::TargetOptions topts;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      profile.triple, profile.cpu, profile.features, topts, llvm::Reloc::PIC_, std::nullopt,
      llvm::CodeGenOpt::Aggressive));
  if (!tm) return make_error("profile '{}': cannot create a target machine for {}", profile.name, profile.triple);

  llvm::LLVMContext ctx;
  std::string arch = arch_of(profile.triple);
  std::string_view bc = kernel_bitcode(arch);
  if (bc.empty()) return make_error("profile '{}': no kernel library for architecture {}", profile.name, arch);
  auto kernels = llvm::parseBitcodeFile(llvm::MemoryBufferRef(llvm::StringRef(bc.data(), bc.size()), "kernels"), ctx);
  if (!kernels) return make_error("kernel library for {}: {}", arch, llvm::toString(kernels.takeError()));

  auto m = std::make_unique<llvm::Module>(g.name(), ctx);
  m->setTargetTriple(profile.triple);
  m->setDataLayout(tm->createDataLayout());
  (*kernels)->setTargetTriple(profile.triple);
  (*kernels)->setDataLayout(tm->createDataLayout());
  if (llvm::Linker::linkModules(*m, std::move(*kernels)))
    return make_error("cannot link the kernel library for {}", arch);
  // The profile's weight prefetch, as a constant the optimiser folds into the kernels.
  if (llvm::GlobalVariable* pf = m->getGlobalVariable(KILN_WEIGHT_PREFETCH_SYMBOL)) {
    const int kind = profile.weight_prefetch == WeightPrefetch::OuterCache ? KILN_WEIGHT_PREFETCH_L2 : KILN_WEIGHT_PREFETCH_NT;
    pf->setInitializer(llvm::ConstantInt::get(pf->getValueType(), kind));
    pf->setConstant(true);
    pf->setLinkage(llvm::GlobalValue::InternalLinkage);
  }

  CompiledCode out;
  out.cpu_features = checked_cpu_features(profile);
  Lowering lowering(ctx, *m, g, profile, out.cpu_features);
  KILN_TRY(lowering.lower(opts, &out.kernels));

  // Kernel templates inline into their wrappers; everything gets the profile's CPU.
  for (llvm::Function& f : *m) {
    if (f.isDeclaration()) continue;
    f.removeFnAttr("target-cpu");
    f.removeFnAttr("target-features");
    f.removeFnAttr("tune-cpu");
    f.addFnAttr("target-cpu", profile.cpu);
    if (!profile.features.empty()) f.addFnAttr("target-features", profile.features);
    if (f.getName().startswith("kiln_")) {
      f.setLinkage(llvm::GlobalValue::InternalLinkage);
      f.removeFnAttr(llvm::Attribute::NoInline);
      f.removeFnAttr(llvm::Attribute::OptimizeNone);
      f.addFnAttr(llvm::Attribute::AlwaysInline);
    }
  }
  std::string verr;
  llvm::raw_string_ostream vs(verr);
  if (llvm::verifyModule(*m, &vs)) return make_error("codegen produced invalid LLVM IR: {}", vs.str());

  {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(tm.get());
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
    mpm.run(*m, mam);
  }
  if (opts.want_llvm_ir) {
    llvm::raw_string_ostream os(out.llvm_ir);
    m->print(os, nullptr);
  }
  auto emit = [&](llvm::CodeGenFileType kind, std::string& dst) -> Status {
    llvm::SmallVector<char, 0> buf;
    llvm::raw_svector_ostream os(buf);
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr, kind))
      return make_error("profile '{}': the target cannot emit this file type", profile.name);
    pm.run(*m);
    dst.assign(buf.begin(), buf.end());
    return Status::success();
  };
  // Code generation rewrites the module, so the assembly comes from a copy.
  if (opts.want_assembly) {
    std::unique_ptr<llvm::Module> copy = llvm::CloneModule(*m);
    std::swap(m, copy);
    KILN_TRY(emit(llvm::CGFT_AssemblyFile, out.assembly));
    std::swap(m, copy);
  }
  KILN_TRY(emit(llvm::CGFT_ObjectFile, out.object));
  return out;
}

}  // namespace kiln
