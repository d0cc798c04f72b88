// support/log.cpp — one stderr logger for the whole process.
#include "support/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace kiln {

void set_verbosity(int level) {
  static auto logger = [] {
    auto l = spdlog::stderr_color_mt("kiln");
    l->set_pattern("%^[%l]%$ %v");
    spdlog::set_default_logger(l);
    return l;
  }();
  spdlog::level::level_enum lv = level <= 0   ? spdlog::level::warn
                                 : level == 1 ? spdlog::level::info
                                 : level == 2 ? spdlog::level::debug
                                              : spdlog::level::trace;
  logger->set_level(lv);
}

}  // namespace kiln
