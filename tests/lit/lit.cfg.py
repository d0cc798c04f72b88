# tests/lit/lit.cfg.py — lit configuration for kiln's IR text tests.
#
# Each test is a .kir file (IR text with `// RUN:` lines, which the parser skips as
# comments) or a .test file (RUN lines over inputs cut out with split-file). The tool
# paths come from lit.site.cfg.py, which CMake generates in the build directory; run the
# suite with `ctest -L lit` or `lit -sv BUILD/tests/lit`.
import os

import lit.formats

config.name = "kiln"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".kir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py.in"]

if not hasattr(config, "kiln_obj_root"):
    lit_config.fatal("run lit on the build directory (BUILD/tests/lit), which holds "
                     "the generated lit.site.cfg.py")

config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = config.kiln_obj_root

# Tool names are matched as whole words outside paths, so `FileCheck` inside a file name
# or a CHECK line's argument is left alone. `not` is a builtin of lit's internal shell.
def tool(name):
    return r"(?<![\w/.-])" + name.replace("-", r"\-") + r"(?![\w/.-])"

config.substitutions.append(("%kiln", config.kiln_binary))
config.substitutions.append((tool("FileCheck"), config.filecheck))
config.substitutions.append((tool("split-file"), config.split_file))

# Keep diagnostics and spdlog output free of colour codes and locale effects.
config.environment["TERM"] = "dumb"
config.environment["LC_ALL"] = "C"
