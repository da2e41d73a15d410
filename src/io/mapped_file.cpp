#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace moe {

namespace {

// Closes a file descriptor on scope exit unless released.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

[[noreturn]] void fail_errno(const std::string& path, const char* what, int err) {
  fail("%s: %s: %s", path.c_str(), what, std::strerror(err));
}

int open_retry(const char* path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

void write_all(int fd, const std::string& tmp, const void* bytes, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(bytes);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(tmp, "cannot write", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Best effort: makes a rename durable by syncing the containing directory.
void sync_parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int fd = open_retry(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

MappedFile::~MappedFile() {
  if (data) ::munmap(const_cast<uint8_t*>(data), size);
}

void mapped_file_open(MappedFile* f, const std::string& path) {
  if (f->data) ::munmap(const_cast<uint8_t*>(f->data), f->size);
  f->data = nullptr;
  f->size = 0;
  f->path = path;

  FdGuard g;
  g.fd = open_retry(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (g.fd < 0) fail_errno(path, "cannot open", errno);
  struct stat st;
  if (::fstat(g.fd, &st) != 0) fail_errno(path, "cannot stat", errno);
  if (S_ISDIR(st.st_mode)) fail("%s: is a directory, expected a file", path.c_str());
  if (!S_ISREG(st.st_mode)) fail("%s: is not a regular file", path.c_str());
  if (st.st_size == 0) return;
  size_t size = static_cast<size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, g.fd, 0);
  if (p == MAP_FAILED) fail_errno(path, "cannot mmap", errno);
  f->data = static_cast<const uint8_t*>(p);
  f->size = size;
}

std::string read_text_file(const std::string& path) {
  FdGuard g;
  g.fd = open_retry(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (g.fd < 0) fail_errno(path, "cannot open", errno);
  struct stat st;
  if (::fstat(g.fd, &st) != 0) fail_errno(path, "cannot stat", errno);
  if (S_ISDIR(st.st_mode)) fail("%s: is a directory, expected a file", path.c_str());
  std::string out;
  if (S_ISREG(st.st_mode) && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    ssize_t r = ::read(g.fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, "cannot read", errno);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

void write_file_atomic(const std::string& path, const void* bytes, size_t n) {
  write_file_atomic_chunks(path, {WriteChunk{bytes, n}});
}

void write_file_atomic_chunks(const std::string& path, const std::vector<WriteChunk>& chunks) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = open_retry(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno(tmp, "cannot create", errno);
  try {
    for (const WriteChunk& c : chunks) {
      if (c.size > 0 && !c.data)
        fail("%s: internal error: null chunk of %zu bytes", tmp.c_str(), c.size);
      write_all(fd, tmp, c.data, c.size);
    }
    if (::fsync(fd) != 0) fail_errno(tmp, "cannot fsync", errno);
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail_errno(tmp, "cannot close", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      fail("%s: cannot rename %s into place: %s", path.c_str(), tmp.c_str(), std::strerror(err));
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  sync_parent_dir(path);
}

AtomicFile::~AtomicFile() {
  if (fd >= 0) ::close(fd);
  if (!tmp.empty()) ::unlink(tmp.c_str());
}

void atomic_file_open(AtomicFile* f, const std::string& path) {
  MOE_CHECK(f->fd < 0 && f->tmp.empty());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = open_retry(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno(tmp, "cannot create", errno);
  f->path = path;
  f->tmp = tmp;
  f->fd = fd;
}

void atomic_file_write(AtomicFile* f, const void* data, size_t n) {
  MOE_CHECK(f->fd >= 0);
  write_all(f->fd, f->tmp, data, n);
}

void atomic_file_commit(AtomicFile* f) {
  MOE_CHECK(f->fd >= 0);
  if (::fsync(f->fd) != 0) fail_errno(f->tmp, "cannot fsync", errno);
  int rc = ::close(f->fd);
  f->fd = -1;
  if (rc != 0) fail_errno(f->tmp, "cannot close", errno);
  if (::rename(f->tmp.c_str(), f->path.c_str()) != 0) {
    int err = errno;
    fail("%s: cannot rename %s into place: %s", f->path.c_str(), f->tmp.c_str(),
         std::strerror(err));
  }
  f->tmp.clear();
  sync_parent_dir(f->path);
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

int64_t resident_bytes(const std::vector<std::pair<uintptr_t, uintptr_t>>& ranges) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  std::vector<std::pair<uintptr_t, uintptr_t>> pages;  // [first, last) page numbers, merged
  for (const auto& [a, b] : ranges)
    if (b > a) pages.push_back({a / page, (b + page - 1) / page});
  std::sort(pages.begin(), pages.end());
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (const auto& r : pages) {
    if (!merged.empty() && r.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, r.second);
    else
      merged.push_back(r);
  }
  const int fd = ::open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return -1;
  int64_t present = 0;
  std::vector<uint64_t> buf(4096);  // pagemap entries, bit 63 = present
  for (const auto& [p0, p1] : merged) {
    for (uintptr_t p = p0; p < p1;) {
      const size_t n = std::min<uintptr_t>(buf.size(), p1 - p);
      const ssize_t got = ::pread(fd, buf.data(), n * 8, static_cast<off_t>(p * 8));
      if (got != static_cast<ssize_t>(n * 8)) {
        ::close(fd);
        return -1;
      }
      for (size_t i = 0; i < n; ++i) present += (buf[i] >> 63) & 1;
      p += n;
    }
  }
  ::close(fd);
  return present * static_cast<int64_t>(page);
}

}  // namespace moe
