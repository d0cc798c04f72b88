// codegen/jit.cpp — see jit.h.
#include "codegen/jit.h"

#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>

namespace kiln {

struct JitObject::Impl {
  std::unique_ptr<llvm::orc::LLJIT> jit;
};

JitObject::~JitObject() = default;

Result<std::unique_ptr<JitObject>> JitObject::load(const std::string& object_bytes, const std::string& symbol) {
  static bool init = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)init;
  auto jit = llvm::orc::LLJITBuilder().create();
  if (!jit) return make_error("JIT: {}", llvm::toString(jit.takeError()));
  // Resolve libc (memcpy, memset) from this process, as the app's linker would.
  auto gen = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*jit)->getDataLayout().getGlobalPrefix());
  if (!gen) return make_error("JIT: {}", llvm::toString(gen.takeError()));
  (*jit)->getMainJITDylib().addGenerator(std::move(*gen));
  auto buf = llvm::MemoryBuffer::getMemBufferCopy(llvm::StringRef(object_bytes.data(), object_bytes.size()), "model.o");
  if (auto err = (*jit)->addObjectFile(std::move(buf)))
    return make_error("JIT: cannot add model.o: {}", llvm::toString(std::move(err)));
  auto sym = (*jit)->lookup(symbol);
  if (!sym) return make_error("JIT: model.o does not define {}: {}", symbol, llvm::toString(sym.takeError()));
  auto out = std::unique_ptr<JitObject>(new JitObject());
  out->impl_ = std::make_unique<Impl>();
  out->impl_->jit = std::move(*jit);
  out->model_ = sym->toPtr<const kiln_compiled_model*>();
  if (out->model_->abi_version != KILN_ABI_VERSION)
    return make_error("model.o was compiled for kiln ABI {}, this kiln speaks {}", out->model_->abi_version,
                      KILN_ABI_VERSION);
  return out;
}

}  // namespace kiln
