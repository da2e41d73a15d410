// safetensors reader and writer.
//
// Format: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section; offsets are relative to the start of the data section.
//
// The reader maps every file and validates everything before a tensor is used: header length
// against file size, JSON well-formed, dtype known, shape x dtype = byte span, offsets in range
// and non-overlapping. Errors are MoeError with one line naming the file and the tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace moe {

struct StTensor {
  std::string name;
  DType dtype = DT_F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file; may be unaligned
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the file that holds it

  int64_t numel() const;
};

// One or more mapped safetensors files seen as one set of named tensors.
struct StArchive {
  std::vector<std::unique_ptr<MappedFile>> files;
  std::map<std::string, StTensor> tensors;
  std::map<std::string, std::string> metadata;  // __metadata__ of the first file
  std::vector<std::map<std::string, std::string>> file_metadata;  // [files] each file's
  std::string origin;                           // the path the archive was opened from

  const StTensor* find(const std::string& name) const;
  // __metadata__ of the file that holds t (`metadata` for tensors not from a file).
  const std::map<std::string, std::string>& metadata_of(const StTensor& t) const;
  // Throws "<origin>: tensor '<name>' is missing".
  const StTensor& get(const std::string& name) const;
};

// Opens one .safetensors file. Replaces the contents of *ar (origin = path); on error *ar is
// left as it was.
void st_open_file(StArchive* ar, const std::string& path);

// Opens a checkpoint folder: model.safetensors.index.json (sharded; the weight_map must name
// existing files and every listed tensor must be present in its shard) or model.safetensors.
// Replaces the contents of *ar (origin = dir); on error *ar is left as it was.
void st_open_dir(StArchive* ar, const std::string& dir);

// A tensor to write. data must hold numel(shape) * dtype_size(dtype) bytes.
struct StWriteTensor {
  std::string name;
  DType dtype = DT_F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes a safetensors file atomically (temp file, then rename). Tensors are written in the
// order given; the header is padded with spaces to a multiple of 8 bytes.
void st_write(const std::string& path, const std::vector<StWriteTensor>& tensors,
              const std::map<std::string, std::string>& metadata = {});

// A tensor of a streamed write: its data comes from a fill callback.
struct StStreamTensor {
  std::string name;
  DType dtype = DT_F32;
  std::vector<int64_t> shape;
};

// Writes rows [row0, row0 + n_rows) of tensor i to dst. A row is the last axis (a 0-D or 1-D
// tensor is one row): numel / shape.back() rows of shape.back() * dtype_size bytes each.
using StFillFn = std::function<void(size_t i, int64_t row0, int64_t n_rows, uint8_t* dst)>;

// Writes a safetensors file whose tensors are produced one after another, so a file larger than
// memory can be written: the header is built from the specs first, then each tensor's rows are
// requested from `fill` in chunks of at most chunk_bytes (at least one row) and written out.
// Atomic like st_write: a temp file beside `path`, fsync, rename; any failure (including an
// exception thrown by fill) removes the temp file and leaves `path` as it was.
void st_write_stream(const std::string& path, const std::vector<StStreamTensor>& tensors,
                     const std::map<std::string, std::string>& metadata, const StFillFn& fill,
                     size_t chunk_bytes = size_t{64} << 20);

}  // namespace moe
