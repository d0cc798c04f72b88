// codegen/jit.cpp — see jit.h.
#include "codegen/jit.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/RTDyldObjectLinkingLayer.h>
#include <llvm/Object/ELFObjectFile.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>

namespace kiln {

struct JitObject::Impl {
  std::unique_ptr<llvm::orc::LLJIT> jit;
};

JitObject::~JitObject() = default;

// KILN_PERF_MAP=1: append the loaded functions (kernels included, which are internal) to
// /tmp/perf-<pid>.map, the file `perf report` reads to name code that lies in no file, so
// a profile of kiln run or a bench shows the kernels and entries by name.
static bool perf_map_wanted() {
  const char* env = std::getenv("KILN_PERF_MAP");
  return env && *env && *env != '0';
}
static void write_perf_map(const llvm::object::ObjectFile& obj, const llvm::RuntimeDyld::LoadedObjectInfo& info) {
  if (!llvm::isa<llvm::object::ELFObjectFileBase>(&obj)) return;  // sizes below are ELF's
  FILE* f = std::fopen(("/tmp/perf-" + std::to_string(::getpid()) + ".map").c_str(), "a");
  if (!f) return;
  for (const llvm::object::SymbolRef& sym : obj.symbols()) {
    auto type = sym.getType();
    auto name = sym.getName();
    auto sec = sym.getSection();
    auto value = sym.getValue();
    if (type && name && sec && value && *type == llvm::object::SymbolRef::ST_Function && *sec != obj.section_end()) {
      const uint64_t base = info.getSectionLoadAddress(**sec);
      const uint64_t size = llvm::object::ELFSymbolRef(sym).getSize();
      if (base) std::fprintf(f, "%llx %llx %s\n", (unsigned long long)(base + *value), (unsigned long long)size,
                             name->str().c_str());
    }
    if (!type) llvm::consumeError(type.takeError());
    if (!name) llvm::consumeError(name.takeError());
    if (!sec) llvm::consumeError(sec.takeError());
    if (!value) llvm::consumeError(value.takeError());
  }
  std::fclose(f);
}

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
  if (perf_map_wanted()) {
    if (auto* rt = llvm::dyn_cast<llvm::orc::RTDyldObjectLinkingLayer>(&(*jit)->getObjLinkingLayer()))
      rt->setNotifyLoaded([](llvm::orc::MaterializationResponsibility&, const llvm::object::ObjectFile& obj,
                             const llvm::RuntimeDyld::LoadedObjectInfo& info) { write_perf_map(obj, info); });
  }
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
