// support/progress.cpp — see progress.h.
#include "support/progress.h"

#include <cstdio>
#include <unistd.h>

namespace kiln {

Progress::Progress(int total, bool enabled)
    : total_(total), enabled_(enabled), tty_(enabled && isatty(STDERR_FILENO)) {
  if (tty_) {
    running_ = true;
    ticker_ = std::thread([this] {
      while (running_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        std::lock_guard<std::mutex> lock(mu_);
        if (running_ && !what_.empty()) draw(false);
      }
    });
  }
}

Progress::~Progress() {
  done();
  running_ = false;
  if (ticker_.joinable()) ticker_.join();
}

void Progress::draw(bool final) {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_)
    std::fprintf(stderr, "\r\033[K[%d/%d] %s %s %.1f s%s", index_, total_, what_.c_str(),
                 final ? "done" : "...", s, final ? "\n" : "");
  else if (final)
    std::fprintf(stderr, "[%d/%d] %s: %.2f s\n", index_, total_, what_.c_str(), s);
  std::fflush(stderr);
}

void Progress::stage(const std::string& what) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!what_.empty()) draw(true);
  what_ = what;
  ++index_;
  start_ = std::chrono::steady_clock::now();
  draw(false);
}

void Progress::done() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!what_.empty()) draw(true);
  what_.clear();
}

}  // namespace kiln
