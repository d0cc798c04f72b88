// support/log.h — logging through spdlog; -v levels in the CLI map onto these.
#pragma once

#include <spdlog/spdlog.h>

namespace kiln {
// 0 = warnings and errors, 1 = info, 2 = debug, 3+ = trace.
void set_verbosity(int level);
}  // namespace kiln
