// tools/kiln/commands.h — the kiln subcommands; each lives in its own file.
#pragma once

namespace kiln::cli {

int cmd_inspect(int argc, char** argv);  // inspect.cpp
int cmd_dump(int argc, char** argv);     // dump.cpp
int cmd_run(int argc, char** argv);      // run.cpp
int cmd_chat(int argc, char** argv);     // chat.cpp
int cmd_compile(int argc, char** argv);  // compile.cpp
int cmd_perplexity(int argc, char** argv);  // perplexity.cpp
int cmd_tokenize(int argc, char** argv);  // tokenize.cpp

}  // namespace kiln::cli
