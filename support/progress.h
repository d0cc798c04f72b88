// support/progress.h — stage-by-stage progress for long commands.
//
// On a terminal, each stage shows as "[2/5] optimising (LLVM O3) ... 3.1 s" with the
// elapsed time ticking, then a check mark and its duration; off a terminal (logs, CI)
// one line per finished stage. Output goes to stderr so stdout stays clean for data.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

namespace kiln {

class Progress {
 public:
  Progress(int total, bool enabled = true);
  ~Progress();
  // Ends the current stage (if any) and starts the next.
  void stage(const std::string& what);
  // Ends the current stage.
  void done();

 private:
  void draw(bool final);
  int total_;
  int index_ = 0;
  bool enabled_, tty_;
  std::string what_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::atomic<bool> running_{false};
  std::thread ticker_;
};

}  // namespace kiln
