// support/file.cpp — MappedFile and atomic writes over POSIX.
#include "support/file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln {

MappedFile::~MappedFile() {
  if (owned_ && data_ && size_) munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (owned_ && data_ && size_) munmap(const_cast<uint8_t*>(data_), size_);
    data_ = o.data_; size_ = o.size_; owned_ = o.owned_; path_ = std::move(o.path_);
    o.data_ = nullptr; o.size_ = 0; o.owned_ = false;
  }
  return *this;
}

Result<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error("{}: {}", path, S_ISDIR(st.st_mode) ? "is a folder, not a file" : "is not a regular file");
  }
  MappedFile f;
  f.path_ = path;
  f.size_ = static_cast<size_t>(st.st_size);
  if (f.size_ > 0) {
    void* p = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return make_error("{}: cannot map: {}", path, std::strerror(errno));
    }
    f.data_ = static_cast<const uint8_t*>(p);
    f.owned_ = true;
  }
  ::close(fd);
  return f;
}

MappedFile MappedFile::borrow(const void* data, size_t size, std::string name) {
  MappedFile f;
  f.data_ = static_cast<const uint8_t*>(data);
  f.size_ = size;
  f.path_ = std::move(name);
  return f;
}

Status write_file_atomic(const std::string& path, std::string_view bytes) {
  if (path.empty()) return make_error("the output file's path is empty");
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_error("{}: cannot create: {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error("{}: write failed: {}", tmp, std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return make_error("{}: cannot flush", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error("{}: cannot rename into place: {}", path, std::strerror(e));
  }
  return Status::success();
}

Result<std::string> read_file(const std::string& path) {
  // Files and pipes (`--file <(zcat text.gz)`) are read to their end; a device such as
  // /dev/zero never ends, so it is refused before it is opened.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
    return make_error("{}: {}", path, S_ISDIR(st.st_mode) ? "is a folder, not a file" : "is not a regular file");
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return make_error("{}: cannot open: {}", path, std::strerror(errno));
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  bool err = std::ferror(f);
  std::fclose(f);
  if (err) return make_error("{}: read error", path);
  return out;
}

std::vector<std::string> split_texts(std::string_view all) {
  const std::string_view sep = "\n===\n";
  std::vector<std::string> out;
  for (size_t b = 0;;) {
    const size_t e = all.find(sep, b);
    std::string t(all.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b));
    while (!t.empty() && t.back() == '\n') t.pop_back();
    if (!t.empty()) out.push_back(std::move(t));
    if (e == std::string_view::npos) break;
    b = e + sep.size();
  }
  return out;
}

}  // namespace kiln
