// codegen/loaded_artifact.cpp — see loaded_artifact.h.
#include "codegen/loaded_artifact.h"

#include "support/file.h"

namespace kiln {

LoadedArtifact::~LoadedArtifact() {
  if (session) kiln_session_free(session);
  if (model) kiln_model_free(model);
}

Result<std::unique_ptr<LoadedArtifact>> load_artifact(const std::string& dir, int threads, const std::string& symbol) {
  auto a = std::make_unique<LoadedArtifact>();
  KILN_ASSIGN(std::string object, read_file(dir + "/model.o"));
  KILN_ASSIGN(a->code, JitObject::load(object, symbol));
  if (kiln_model_load(a->code->model(), (dir + "/model.kiln").c_str(), &a->model) != KILN_OK)
    return make_error("{}", kiln_last_error());
  kiln_session_params params = kiln_session_default_params();
  params.n_threads = threads;
  if (kiln_session_init(a->model, &params, &a->session) != KILN_OK) return make_error("{}", kiln_last_error());
  return a;
}

}  // namespace kiln
