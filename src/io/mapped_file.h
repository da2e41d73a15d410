// Read-only memory-mapped file (RAII). Empty files map to a null pointer with size 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moe {

struct MappedFile {
  std::string path;
  const uint8_t* data = nullptr;
  size_t size = 0;

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
};

// Maps `path` read-only. Throws MoeError naming the path on failure.
void mapped_file_open(MappedFile* f, const std::string& path);

// How many bytes of the pages covering the address ranges [first, second) are resident in this
// process's memory now (present in its page table: /proc/self/pagemap); a page shared by two
// ranges counts once. -1 where pagemap cannot be read.
int64_t resident_bytes(const std::vector<std::pair<uintptr_t, uintptr_t>>& ranges);

// Reads a whole (small) text file. Throws MoeError naming the path on failure.
std::string read_text_file(const std::string& path);

// Writes `bytes` to `path` atomically: a temp file beside it (`path.tmp.<pid>`), fsync, then
// rename. On failure the temp file is removed and `path` is left as it was.
void write_file_atomic(const std::string& path, const void* bytes, size_t n);

// A piece of a file to write; data may be null when size is 0.
struct WriteChunk {
  const void* data = nullptr;
  size_t size = 0;
};

// Like write_file_atomic, for a file made of several pieces written in order (no copy).
void write_file_atomic_chunks(const std::string& path, const std::vector<WriteChunk>& chunks);

// A file written piece by piece and put in place atomically: created as `path.tmp.<pid>`,
// renamed onto `path` by atomic_file_commit (after fsync). If it is destroyed uncommitted (an
// error on the way), the temp file is removed and `path` is left as it was.
struct AtomicFile {
  std::string path, tmp;
  int fd = -1;
  AtomicFile() = default;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();
};
void atomic_file_open(AtomicFile* f, const std::string& path);
void atomic_file_write(AtomicFile* f, const void* data, size_t n);
void atomic_file_commit(AtomicFile* f);

// True if `path` names an existing file or directory (stat succeeds).
bool file_exists(const std::string& path);

}  // namespace moe
