#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "core/error.h"

namespace moe {

namespace {

using json = nlohmann::json;
using ull = unsigned long long;

// Same limit as the reference implementation; real headers are far smaller.
constexpr uint64_t kMaxHeaderLen = 100000000;
constexpr uint64_t kInt64Max = static_cast<uint64_t>(INT64_MAX);

// A string taken from a file, made safe for a one-line message: control bytes are escaped and
// very long strings are cut.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 200) return out + "...";
    if (c < 0x20 || c == 0x7f)
      out += strfmt("\\x%02x", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

// "an array", "a string", "a fractional number", ... for "got %s" in messages.
const char* kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_float:
      return "a fractional number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    default:
      return "an unsupported value";
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Strips nlohmann's "[json.exception.parse_error.101] " prefix.
std::string json_error_text(const std::exception& e) {
  std::string w = e.what();
  if (!w.empty() && w[0] == '[') {
    size_t close = w.find("] ");
    if (close != std::string::npos) w = w.substr(close + 2);
  }
  return printable(w);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Bytes taken by `shape` of `dtype` (dims already known non-negative); fails on overflow.
uint64_t shape_nbytes(const std::string& path, const std::string& name,
                      const std::vector<int64_t>& shape, DType dtype) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) || numel > kInt64Max)
      fail("%s: tensor '%s': shape %s has more elements than fit in 64 bits", path.c_str(),
           printable(name).c_str(), shape_str(shape).c_str());
  }
  uint64_t nbytes;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(dtype)), &nbytes) ||
      nbytes > kInt64Max)
    fail("%s: tensor '%s': shape %s x %s needs more bytes than fit in 64 bits", path.c_str(),
         printable(name).c_str(), shape_str(shape).c_str(), dtype_name(dtype));
  return nbytes;
}

// One parsed file, before it joins an archive.
struct Shard {
  std::unique_ptr<MappedFile> file;
  std::vector<StTensor> tensors;
  std::vector<std::pair<uint64_t, uint64_t>> offsets;  // data_offsets of tensors[i]
  std::map<std::string, std::string> metadata;
};

struct EntryParser {
  const char* path;
  std::string name;  // printable

  [[noreturn]] void bad(const std::string& msg) const {
    fail("%s: tensor '%s': %s", path, name.c_str(), msg.c_str());
  }

  const json& field(const json& e, const char* key) const {
    auto it = e.find(key);
    if (it == e.end()) bad(strfmt("missing field '%s'", key));
    return *it;
  }

  DType dtype(const json& e) const {
    const json& j = field(e, "dtype");
    if (!j.is_string()) bad(strfmt("field 'dtype' must be a string, got %s", kind(j)));
    const std::string& s = j.get_ref<const std::string&>();
    DType t;
    if (!dtype_parse(s, &t)) bad(strfmt("unknown dtype '%s'", printable(s).c_str()));
    return t;
  }

  std::vector<int64_t> shape(const json& e) const {
    const json& j = field(e, "shape");
    if (!j.is_array()) bad(strfmt("field 'shape' must be an array of integers, got %s", kind(j)));
    std::vector<int64_t> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      const json& d = j[i];
      if (d.is_number_unsigned()) {
        uint64_t v = d.get<uint64_t>();
        if (v > kInt64Max) bad(strfmt("shape[%zu] = %llu is too large", i, static_cast<ull>(v)));
        out.push_back(static_cast<int64_t>(v));
      } else if (d.is_number_integer()) {
        bad(strfmt("shape[%zu] is negative (%lld)", i, static_cast<long long>(d.get<int64_t>())));
      } else {
        bad(strfmt("field 'shape' must be an array of integers, shape[%zu] is %s", i, kind(d)));
      }
    }
    return out;
  }

  std::pair<uint64_t, uint64_t> offsets(const json& e) const {
    const json& j = field(e, "data_offsets");
    if (!j.is_array() || j.size() != 2)
      bad(strfmt("field 'data_offsets' must be an array of 2 integers, got %s%s", kind(j),
                 j.is_array() ? strfmt(" of %zu element(s)", j.size()).c_str() : ""));
    uint64_t v[2];
    for (size_t i = 0; i < 2; ++i) {
      if (j[i].is_number_unsigned())
        v[i] = j[i].get<uint64_t>();
      else if (j[i].is_number_integer())
        bad(strfmt("data_offsets[%zu] is negative", i));
      else
        bad(strfmt("field 'data_offsets' must hold integers, data_offsets[%zu] is %s", i,
                   kind(j[i])));
    }
    return {v[0], v[1]};
  }
};

void parse_metadata(const char* path, const json& j, std::map<std::string, std::string>* out) {
  if (!j.is_object()) fail("%s: __metadata__ must be an object of strings, got %s", path, kind(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string())
      fail("%s: __metadata__ field '%s' must be a string, got %s", path,
           printable(it.key()).c_str(), kind(it.value()));
    (*out)[it.key()] = it.value().get<std::string>();
  }
}

// Rejects overlapping byte ranges. Empty tensors overlap nothing.
void check_overlaps(const char* path, const Shard& s) {
  std::vector<std::tuple<uint64_t, uint64_t, size_t>> order;
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    if (s.offsets[i].first == s.offsets[i].second) continue;
    order.emplace_back(s.offsets[i].first, s.offsets[i].second, i);
  }
  std::sort(order.begin(), order.end());
  size_t prev = SIZE_MAX;  // tensor with the largest end so far
  for (const auto& [b, e, i] : order) {
    if (prev != SIZE_MAX && b < s.offsets[prev].second)
      fail("%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' at [%llu, %llu]", path,
           printable(s.tensors[i].name).c_str(), static_cast<ull>(b), static_cast<ull>(e),
           printable(s.tensors[prev].name).c_str(), static_cast<ull>(s.offsets[prev].first),
           static_cast<ull>(s.offsets[prev].second));
    if (prev == SIZE_MAX || e > s.offsets[prev].second) prev = i;
  }
}

// The keys of the top-level object, for duplicates. (nlohmann's parser callback would do this in
// one pass, but with a callback its end_object scans the enclosing object each time one of its
// values ends: quadratic in the tensor count, seconds for a checkpoint of 19k tensors.)
struct TopKeys : nlohmann::json_sax<json> {
  int depth = 0;
  std::set<std::string> seen;
  bool has_dup = false;
  std::string dup;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return ++depth, true; }
  bool end_object() override { return --depth, true; }
  bool start_array(std::size_t) override { return ++depth, true; }
  bool end_array() override { return --depth, true; }
  bool key(string_t& k) override {
    if (depth == 1 && !has_dup && !seen.insert(k).second) {
      has_dup = true;
      dup = k;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

void parse_header(Shard* s, const std::string& path, const uint8_t* hbeg, const uint8_t* hend,
                  const uint8_t* data, uint64_t data_size) {
  const char* p = path.c_str();
  json h;
  try {
    h = json::parse(hbeg, hend);
  } catch (const json::exception& e) {
    fail("%s: header is not valid JSON: %s", p, json_error_text(e).c_str());
  }
  if (!h.is_object()) fail("%s: header is not a JSON object (got %s)", p, kind(h));
  // Duplicate keys silently collapse in the DOM, so a second, SAX pass looks for them.
  TopKeys keys;
  json::sax_parse(hbeg, hend, &keys);
  const bool has_dup = keys.has_dup;
  const std::string& dup = keys.dup;
  if (has_dup) {
    if (dup == "__metadata__") fail("%s: __metadata__ appears more than once in the header", p);
    fail("%s: tensor '%s' appears more than once in the header", p, printable(dup).c_str());
  }

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      parse_metadata(p, e, &s->metadata);
      continue;
    }
    EntryParser ep{p, printable(name)};
    if (!e.is_object()) ep.bad(strfmt("entry must be an object, got %s", kind(e)));
    StTensor t;
    t.name = name;
    t.dtype = ep.dtype(e);
    t.shape = ep.shape(e);
    uint64_t need = shape_nbytes(path, name, t.shape, t.dtype);
    auto [b, en] = ep.offsets(e);
    if (b > en)
      ep.bad(strfmt("data_offsets [%llu, %llu] begin after end", static_cast<ull>(b),
                    static_cast<ull>(en)));
    if (en - b != need)
      ep.bad(strfmt("data_offsets [%llu, %llu] span %llu bytes but shape %s x %s needs %llu",
                    static_cast<ull>(b), static_cast<ull>(en), static_cast<ull>(en - b),
                    shape_str(t.shape).c_str(), dtype_name(t.dtype), static_cast<ull>(need)));
    if (en > data_size)
      ep.bad(strfmt("data_offsets [%llu, %llu] end beyond the data section of %llu bytes",
                    static_cast<ull>(b), static_cast<ull>(en), static_cast<ull>(data_size)));
    t.data = data + b;
    t.nbytes = static_cast<size_t>(need);
    t.file = &s->file->path;
    s->tensors.push_back(std::move(t));
    s->offsets.emplace_back(b, en);
  }
  check_overlaps(p, *s);
}

void parse_shard(Shard* s, const std::string& path) {
  s->file = std::make_unique<MappedFile>();
  mapped_file_open(s->file.get(), path);
  const MappedFile& f = *s->file;
  const char* p = path.c_str();
  if (f.size < 8) fail("%s: file is %zu bytes, too short for the 8-byte header length", p, f.size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | f.data[i];
  if (n > f.size - 8)
    fail("%s: header length %llu runs past the end of the file (%zu bytes after the length)", p,
         static_cast<ull>(n), f.size - 8);
  if (n > kMaxHeaderLen)
    fail("%s: header length %llu exceeds the limit of %llu bytes", p, static_cast<ull>(n),
         static_cast<ull>(kMaxHeaderLen));
  const uint8_t* hbeg = f.data + 8;
  const uint8_t* hend = hbeg + n;
  parse_header(s, path, hbeg, hend, hend, f.size - 8 - n);
}

void add_shard(StArchive* ar, Shard* s) {
  for (StTensor& t : s->tensors) {
    auto it = ar->tensors.find(t.name);
    if (it != ar->tensors.end())
      fail("%s: tensor '%s' is also in %s", t.file->c_str(), printable(t.name).c_str(),
           it->second.file->c_str());
    ar->tensors.emplace(t.name, std::move(t));
  }
  if (ar->files.empty()) ar->metadata = s->metadata;
  ar->file_metadata.push_back(std::move(s->metadata));
  ar->files.push_back(std::move(s->file));
}

void open_index(StArchive* ar, const std::string& dir, const std::string& index) {
  const char* ip = index.c_str();
  json j;
  try {
    j = json::parse(read_text_file(index));
  } catch (const json::exception& e) {
    fail("%s: not valid JSON: %s", ip, json_error_text(e).c_str());
  }
  if (!j.is_object()) fail("%s: not a JSON object (got %s)", ip, kind(j));
  auto wm = j.find("weight_map");
  if (wm == j.end()) fail("%s: missing field 'weight_map'", ip);
  if (!wm->is_object()) fail("%s: field 'weight_map' must be an object, got %s", ip, kind(*wm));
  if (wm->empty()) fail("%s: weight_map is empty", ip);

  std::map<std::string, std::string> want;       // tensor -> shard file name
  std::map<std::string, std::string> shard_for;  // shard file name -> first tensor naming it
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string name = printable(it.key());
    if (!it.value().is_string())
      fail("%s: weight_map['%s'] must be a string (a shard file name), got %s", ip, name.c_str(),
           kind(it.value()));
    const std::string& fn = it.value().get_ref<const std::string&>();
    if (fn.empty() || fn.find('/') != std::string::npos || fn.find("..") != std::string::npos ||
        fn.find('\0') != std::string::npos)
      fail("%s: weight_map['%s']: shard file name '%s' must be a plain file name in %s", ip,
           name.c_str(), printable(fn).c_str(), dir.c_str());
    want[it.key()] = fn;
    shard_for.emplace(fn, it.key());
  }

  for (const auto& [fn, first] : shard_for) {
    std::string sp = join_path(dir, fn);
    if (!file_exists(sp))
      fail("%s: weight_map['%s'] names shard '%s', but %s does not exist", ip,
           printable(first).c_str(), printable(fn).c_str(), sp.c_str());
    Shard s;
    parse_shard(&s, sp);
    add_shard(ar, &s);
  }
  for (const auto& [name, fn] : want) {
    std::string sp = join_path(dir, fn);
    const StTensor* t = ar->find(name);
    if (!t)
      fail("%s: tensor '%s': weight_map names shard '%s', but %s does not contain it", ip,
           printable(name).c_str(), printable(fn).c_str(), sp.c_str());
    if (*t->file != sp)
      fail("%s: tensor '%s': weight_map names shard '%s', but it is in %s", ip,
           printable(name).c_str(), printable(fn).c_str(), t->file->c_str());
  }
  for (const auto& [name, t] : ar->tensors) {
    if (!want.count(name))
      fail("%s: tensor '%s' is not listed in the weight_map of %s", t.file->c_str(),
           printable(name).c_str(), ip);
  }
}

}  // namespace

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const StTensor* StArchive::find(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

const std::map<std::string, std::string>& StArchive::metadata_of(const StTensor& t) const {
  for (size_t i = 0; i < files.size() && i < file_metadata.size(); ++i)
    if (t.file == &files[i]->path) return file_metadata[i];
  return metadata;
}

const StTensor& StArchive::get(const std::string& name) const {
  const StTensor* t = find(name);
  if (!t) fail("%s: tensor '%s' is missing", origin.c_str(), printable(name).c_str());
  return *t;
}

void st_open_file(StArchive* ar, const std::string& path) {
  StArchive a;
  a.origin = path;
  Shard s;
  parse_shard(&s, path);
  add_shard(&a, &s);
  *ar = std::move(a);
}

void st_open_dir(StArchive* ar, const std::string& dir) {
  StArchive a;
  a.origin = dir;
  const std::string index = join_path(dir, "model.safetensors.index.json");
  const std::string single = join_path(dir, "model.safetensors");
  if (file_exists(index)) {
    open_index(&a, dir, index);
  } else if (file_exists(single)) {
    Shard s;
    parse_shard(&s, single);
    add_shard(&a, &s);
  } else if (!file_exists(dir)) {
    fail("%s: checkpoint directory does not exist", dir.c_str());
  } else {
    fail("%s: neither model.safetensors nor model.safetensors.index.json found", dir.c_str());
  }
  *ar = std::move(a);
}

namespace {

struct HeaderEntry {
  const std::string* name;
  DType dtype;
  const std::vector<int64_t>* shape;
};

// The header of a file holding `ts` in order (validated: names, dtypes, shapes, 64-bit sizes),
// with its 8-byte length prefix, padded with spaces to a multiple of 8. nbytes receives each
// tensor's byte size.
std::string encode_header(const std::string& path, const std::vector<HeaderEntry>& ts,
                          const std::map<std::string, std::string>& metadata,
                          std::vector<uint64_t>* nbytes) {
  using ojson = nlohmann::ordered_json;
  const char* p = path.c_str();
  ojson h = ojson::object();
  if (!metadata.empty()) {
    ojson m = ojson::object();
    for (const auto& kv : metadata) m[kv.first] = kv.second;
    h["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t off = 0;
  nbytes->clear();
  for (const HeaderEntry& t : ts) {
    const std::string name = printable(*t.name);
    if (*t.name == "__metadata__") fail("%s: tensor name '__metadata__' is reserved", p);
    if (!names.insert(*t.name).second) fail("%s: tensor '%s' is given twice", p, name.c_str());
    if (static_cast<unsigned>(t.dtype) >= static_cast<unsigned>(DT_COUNT))
      fail("%s: tensor '%s': invalid dtype %d", p, name.c_str(), static_cast<int>(t.dtype));
    for (size_t i = 0; i < t.shape->size(); ++i) {
      if ((*t.shape)[i] < 0)
        fail("%s: tensor '%s': shape[%zu] is negative (%lld)", p, name.c_str(), i,
             static_cast<long long>((*t.shape)[i]));
    }
    uint64_t n = shape_nbytes(path, *t.name, *t.shape, t.dtype);
    uint64_t end;
    if (__builtin_add_overflow(off, n, &end) || end > kInt64Max)
      fail("%s: tensor '%s': data section exceeds 64 bits", p, name.c_str());
    h[*t.name] = ojson{{"dtype", dtype_name(t.dtype)},
                       {"shape", *t.shape},
                       {"data_offsets", ojson::array({off, end})}};
    off = end;
    nbytes->push_back(n);
  }
  std::string hs;
  try {
    hs = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("%s: cannot encode the header: %s", p, json_error_text(e).c_str());
  }
  hs.append((8 - hs.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>(static_cast<uint8_t>(static_cast<uint64_t>(hs.size()) >> (8 * i)));
  return out + hs;
}

}  // namespace

void st_write(const std::string& path, const std::vector<StWriteTensor>& tensors,
              const std::map<std::string, std::string>& metadata) {
  std::vector<HeaderEntry> entries;
  for (const StWriteTensor& t : tensors) entries.push_back({&t.name, t.dtype, &t.shape});
  std::vector<uint64_t> nbytes;
  const std::string header = encode_header(path, entries, metadata, &nbytes);
  std::vector<WriteChunk> chunks{WriteChunk{header.data(), header.size()}};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StWriteTensor& t = tensors[i];
    if (nbytes[i] > 0 && !t.data)
      fail("%s: tensor '%s': data is null but shape %s x %s needs %llu bytes", path.c_str(),
           printable(t.name).c_str(), shape_str(t.shape).c_str(), dtype_name(t.dtype),
           static_cast<ull>(nbytes[i]));
    if (nbytes[i] > 0) chunks.push_back(WriteChunk{t.data, static_cast<size_t>(nbytes[i])});
  }
  write_file_atomic_chunks(path, chunks);
}

void st_write_stream(const std::string& path, const std::vector<StStreamTensor>& tensors,
                     const std::map<std::string, std::string>& metadata, const StFillFn& fill,
                     size_t chunk_bytes) {
  std::vector<HeaderEntry> entries;
  for (const StStreamTensor& t : tensors) entries.push_back({&t.name, t.dtype, &t.shape});
  std::vector<uint64_t> nbytes;
  const std::string header = encode_header(path, entries, metadata, &nbytes);
  AtomicFile f;
  atomic_file_open(&f, path);
  atomic_file_write(&f, header.data(), header.size());
  std::vector<uint8_t> buf;  // (chunk rows, row bytes), reused across tensors
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (nbytes[i] == 0) continue;
    const std::vector<int64_t>& shape = tensors[i].shape;
    const uint64_t last = shape.empty() ? 1 : static_cast<uint64_t>(shape.back());  // > 0 here
    const uint64_t rb = last * dtype_size(tensors[i].dtype);
    const int64_t rows = static_cast<int64_t>(nbytes[i] / rb);
    const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes / rb));
    for (int64_t r0 = 0; r0 < rows; r0 += per_chunk) {
      const int64_t n = std::min(per_chunk, rows - r0);
      buf.resize(static_cast<size_t>(n * rb));
      fill(i, r0, n, buf.data());
      atomic_file_write(&f, buf.data(), buf.size());
    }
  }
  atomic_file_commit(&f);
}

}  // namespace moe
