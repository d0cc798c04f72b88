// tests/unit/artifact_output_test.cpp — where `kiln compile -o` may write its artifact.
//
// compile_model checks the output folder before it reads the model, so these run without
// one: a path that names a file, a folder of other things or nothing is refused with the
// path in the message and nothing on disk is touched; a new path, an empty folder or an
// earlier artifact (a folder holding model.kiln) pass the check and the compile goes on to
// the (missing) model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "codegen/compile.h"
#include "tests/temp_folder.h"

namespace kiln {
namespace {
namespace fs = std::filesystem;

std::string compile_error(const std::string& out_dir) {
  CompileRequest req;
  req.model_path = testing::process_temp_path("no-such-model.gguf");
  req.out_dir = out_dir;
  req.progress = false;
  auto sum = compile_model(req);
  EXPECT_FALSE(sum.ok());
  return sum.ok() ? "" : sum.error().message;
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

TEST(ArtifactOutput, AFileIsNotReplaced) {
  const fs::path f = testing::process_temp_path("notes.txt");
  write(f, "keep");
  const std::string e = compile_error(f.string());
  EXPECT_NE(e.find(f.string()), std::string::npos) << e;
  EXPECT_NE(e.find("not a folder"), std::string::npos) << e;
  EXPECT_TRUE(fs::is_regular_file(f));
}

TEST(ArtifactOutput, AFolderOfOtherThingsIsNotReplaced) {
  const fs::path d = testing::process_temp_path("mydir");
  fs::create_directories(d);
  write(d / "keep.txt", "keep");
  for (const std::string& spelling : {d.string(), d.string() + "/", (d / ".").string()}) {
    const std::string e = compile_error(spelling);
    EXPECT_NE(e.find("no model.kiln"), std::string::npos) << spelling << ": " << e;
  }
  EXPECT_TRUE(fs::is_regular_file(d / "keep.txt"));
}

TEST(ArtifactOutput, AnEmptyPathIsAnError) {
  EXPECT_NE(compile_error("").find("path is empty"), std::string::npos);
}

TEST(ArtifactOutput, NewEmptyOrEarlierArtifactFoldersPassTheCheck) {
  const fs::path fresh = testing::process_temp_path("fresh/out");
  const fs::path empty = testing::process_temp_path("empty");
  const fs::path earlier = testing::process_temp_path("earlier");
  fs::create_directories(empty);
  fs::create_directories(earlier);
  write(earlier / "model.kiln", "an earlier artifact");
  for (const fs::path& p : {fresh, empty, earlier}) {
    const std::string e = compile_error(p.string());
    EXPECT_NE(e.find("no-such-model.gguf"), std::string::npos) << p << ": " << e;  // got to the model
  }
  EXPECT_TRUE(fs::exists(earlier / "model.kiln"));  // replaced only by a successful compile
}

}  // namespace
}  // namespace kiln
