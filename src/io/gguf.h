// GGUF reader (llama.cpp / ggml's model file format), single files and splits.
//
// Format (little-endian): "GGUF", u32 version (2 or 3), u64 tensor count, u64 key-value count;
// the key-values (string key, u32 value type, value; a string is u64 length + bytes, an array is
// u32 element type + u64 count + elements); the tensor infos (string name, u32 n_dims <= 4,
// u64 ne[n_dims] innermost first, u32 ggml type, u64 offset into the data section); padding to
// `general.alignment` (default 32); the data section. Each tensor's offset is a multiple of the
// alignment, and ne[0] a multiple of its type's block size.
//
// Everything is checked at open, before any tensor is used: magic, version, counts against the
// bytes left, string and array lengths, value types, n_dims, dimensions and their product, tensor
// types (those the engine runs: quant/quant.h QType), block multiples, alignment, offsets and
// sizes in range, no overlaps, no duplicate names or keys. Every failure is a MoeError with one
// line naming the file and the key or tensor.
//
// Splits (`NAME-00001-of-00003.gguf`, keys split.no / split.count): opening the first file opens
// them all; tensors are merged, key-values come from the first file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "quant/quant.h"

namespace moe {

enum GgufType {
  GGUF_U8 = 0,
  GGUF_I8 = 1,
  GGUF_U16 = 2,
  GGUF_I16 = 3,
  GGUF_U32 = 4,
  GGUF_I32 = 5,
  GGUF_F32 = 6,
  GGUF_BOOL = 7,
  GGUF_STRING = 8,
  GGUF_ARRAY = 9,
  GGUF_U64 = 10,
  GGUF_I64 = 11,
  GGUF_F64 = 12,
  GGUF_TYPE_COUNT
};

const char* gguf_type_name(GgufType t);

// One value: a scalar (integer types in i / u, floats in f, bool in i, string in s) or an array
// (type GGUF_ARRAY, elements of arr_type in ints / floats / strs; bools as ints).
struct GgufValue {
  GgufType type = GGUF_U8;
  GgufType arr_type = GGUF_U8;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0.0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strs;

  bool is_int() const;  // an integer or bool scalar
  size_t size() const;  // array length (0 for scalars)
};

struct GgufTensor {
  std::string name;
  QType type = QT_F32;
  int ggml_type = 0;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // innermost first
  const uint8_t* data = nullptr;  // into the mapped file
  size_t nbytes = 0;
  const std::string* file = nullptr;

  int64_t numel() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
};

struct GgufFile {
  std::vector<std::unique_ptr<MappedFile>> files;
  std::string path;  // the file opened (the first split)
  uint32_t version = 0;
  uint64_t alignment = 32;
  std::map<std::string, GgufValue> kv;
  std::map<std::string, GgufTensor> tensors;
  std::vector<std::string> order;  // tensor names in file order

  const GgufValue* find(const std::string& key) const;
  const GgufTensor* tensor(const std::string& name) const;
  // Typed getters: throw "<path>: key '<key>' is missing" / "... is <type>, expected ...".
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  std::string get_str(const std::string& key) const;
  std::string get_str(const std::string& key, const std::string& def) const;
};

// The engine's QType of a ggml type id; false for types it does not run.
bool gguf_qtype(int ggml_type, QType* out);
// ggml's type id of a QType.
int gguf_ggml_type(QType t);

// Opens a .gguf file (and the rest of its split). Replaces *g; on error *g is left as it was.
void gguf_open(GgufFile* g, const std::string& path);

// Parses one mapped GGUF file's bytes into *g (appending its tensors), `path` for messages.
// Used by gguf_open per split; exposed for tests of in-memory files.
void gguf_parse(GgufFile* g, const uint8_t* data, size_t size, const std::string* path,
                bool first);

// A tensor to write: ne innermost first, data holds its rows of `type` (qtype_row_bytes each).
struct GgufWriteTensor {
  std::string name;
  QType type = QT_F32;
  std::vector<int64_t> ne;
  const void* data = nullptr;
};

// Writes a GGUF (version 3) file atomically: the key-values in the order given, the tensor infos,
// the data aligned to `alignment` (written as general.alignment when not 32).
void gguf_write(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv,
                const std::vector<GgufWriteTensor>& tensors, uint64_t alignment = 32);

// True if path ends in ".gguf".
bool is_gguf_path(const std::string& path);

}  // namespace moe
