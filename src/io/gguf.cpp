#include "io/gguf.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "quant/ggml_types.h"

namespace moe {

namespace {

constexpr uint64_t kMaxDim = uint64_t{1} << 42;  // no real dimension comes near this

// A string from a file made safe for a one-line message.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 120) return out + "...";
    if (c < 0x20 || c == 0x7f) out += strfmt("\\x%02x", c);
    else out += static_cast<char>(c);
  }
  return out;
}

// Bounds-checked little-endian reads; `what` names the item being read for messages.
struct Reader {
  const uint8_t* p;
  size_t size, pos = 0;
  const char* path;

  uint64_t left() const { return size - pos; }
  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      fail("%s: truncated: %s needs %llu bytes at offset %zu, the file has %llu left", path,
           what.c_str(), static_cast<unsigned long long>(n), pos,
           static_cast<unsigned long long>(left()));
  }
  template <class T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    const uint64_t n = get<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p + pos), n);
    pos += n;
    return s;
  }
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    case GGUF_STRING: return 8;  // at least its length
    default: return 0;
  }
}

// Reads one scalar of type t into v (integers into i and u, floats into f, strings into s).
void read_scalar(Reader& r, GgufType t, GgufValue* v, const std::string& what) {
  switch (t) {
    case GGUF_U8: v->u = r.get<uint8_t>(what); v->i = static_cast<int64_t>(v->u); break;
    case GGUF_I8: v->i = r.get<int8_t>(what); break;
    case GGUF_U16: v->u = r.get<uint16_t>(what); v->i = static_cast<int64_t>(v->u); break;
    case GGUF_I16: v->i = r.get<int16_t>(what); break;
    case GGUF_U32: v->u = r.get<uint32_t>(what); v->i = static_cast<int64_t>(v->u); break;
    case GGUF_I32: v->i = r.get<int32_t>(what); break;
    case GGUF_U64:
      v->u = r.get<uint64_t>(what);
      v->i = v->u > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v->u);
      break;
    case GGUF_I64: v->i = r.get<int64_t>(what); break;
    case GGUF_F32: v->f = r.get<float>(what); break;
    case GGUF_F64: v->f = r.get<double>(what); break;
    case GGUF_BOOL: {
      const uint8_t b = r.get<uint8_t>(what);
      if (b > 1) fail("%s: %s: bool value %u is not 0 or 1", r.path, what.c_str(), b);
      v->i = b;
      break;
    }
    case GGUF_STRING: v->s = r.str(what); break;
    default: fail("%s: %s: bad value type %d", r.path, what.c_str(), static_cast<int>(t));
  }
  if (t != GGUF_U64 && t != GGUF_F32 && t != GGUF_F64 && t != GGUF_STRING && v->i >= 0)
    v->u = static_cast<uint64_t>(v->i);
}

void read_value(Reader& r, GgufValue* v, const std::string& key) {
  const std::string what = "key '" + printable(key) + "'";
  const uint32_t t = r.get<uint32_t>(what + " type");
  if (t >= GGUF_TYPE_COUNT) fail("%s: %s: unknown value type %u", r.path, what.c_str(), t);
  v->type = static_cast<GgufType>(t);
  if (v->type != GGUF_ARRAY) {
    read_scalar(r, v->type, v, what);
    return;
  }
  const uint32_t at = r.get<uint32_t>(what + " array type");
  if (at >= GGUF_TYPE_COUNT || at == GGUF_ARRAY)
    fail("%s: %s: array element type %u is not supported", r.path, what.c_str(), at);
  v->arr_type = static_cast<GgufType>(at);
  const uint64_t n = r.get<uint64_t>(what + " array length");
  if (n > r.left() / scalar_size(v->arr_type))
    fail("%s: %s: array length %llu is more than the file can hold", r.path, what.c_str(),
         static_cast<unsigned long long>(n));
  GgufValue e;
  if (v->arr_type == GGUF_STRING) v->strs.reserve(n);
  else if (v->arr_type == GGUF_F32 || v->arr_type == GGUF_F64) v->floats.reserve(n);
  else v->ints.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    read_scalar(r, v->arr_type, &e, what);
    if (v->arr_type == GGUF_STRING) v->strs.push_back(std::move(e.s));
    else if (v->arr_type == GGUF_F32 || v->arr_type == GGUF_F64) v->floats.push_back(e.f);
    else v->ints.push_back(e.i);
  }
}

void read_kv(Reader& r, GgufFile* g, uint64_t n_kv) {
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.str(strfmt("key %llu name", static_cast<unsigned long long>(i)));
    GgufValue v;
    read_value(r, &v, key);
    if (!g->kv.emplace(key, std::move(v)).second)
      fail("%s: key '%s' appears twice", r.path, printable(key).c_str());
  }
}

struct Info {
  GgufTensor t;
  uint64_t offset = 0;
};

Info read_tensor_info(Reader& r, uint64_t index) {
  Info in;
  in.t.name = r.str(strfmt("tensor %llu name", static_cast<unsigned long long>(index)));
  const std::string nm = printable(in.t.name);
  const char* f = r.path;
  const uint32_t nd = r.get<uint32_t>("tensor '" + nm + "' n_dims");
  if (nd < 1 || nd > 4) fail("%s: tensor '%s': n_dims %u is not 1..4", f, nm.c_str(), nd);
  in.t.n_dims = static_cast<int>(nd);
  uint64_t numel = 1;
  for (uint32_t d = 0; d < nd; ++d) {
    const uint64_t ne = r.get<uint64_t>("tensor '" + nm + "' shape");
    if (ne > kMaxDim) fail("%s: tensor '%s': dimension %u is %llu, out of range", f, nm.c_str(), d,
                           static_cast<unsigned long long>(ne));
    if (ne != 0 && numel > kMaxDim / ne)
      fail("%s: tensor '%s': element count overflows", f, nm.c_str());
    numel *= ne;
    in.t.ne[d] = static_cast<int64_t>(ne);
  }
  in.t.ggml_type = static_cast<int>(r.get<uint32_t>("tensor '" + nm + "' type"));
  if (!gguf_qtype(in.t.ggml_type, &in.t.type))
    fail("%s: tensor '%s': ggml type %d is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, "
         "Q4_1, Q5_0, Q5_1, Q2_K..Q6_K, MXFP4)", f, nm.c_str(), in.t.ggml_type);
  const int bs = qtype_block_size(in.t.type);
  if (in.t.ne[0] % bs != 0)
    fail("%s: tensor '%s': %s rows of %lld elements are not whole blocks of %d", f, nm.c_str(),
         qtype_name(in.t.type), static_cast<long long>(in.t.ne[0]), bs);
  in.t.nbytes = static_cast<size_t>(numel / bs * qtype_block_bytes(in.t.type));
  in.offset = r.get<uint64_t>("tensor '" + nm + "' offset");
  return in;
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"u8",  "i8",  "u16",   "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  return t >= 0 && t < GGUF_TYPE_COUNT ? names[t] : "?";
}

bool GgufValue::is_int() const {
  switch (type) {
    case GGUF_U8: case GGUF_I8: case GGUF_U16: case GGUF_I16: case GGUF_U32: case GGUF_I32:
    case GGUF_U64: case GGUF_I64: case GGUF_BOOL:
      return true;
    default:
      return false;
  }
}

size_t GgufValue::size() const {
  if (type != GGUF_ARRAY) return 0;
  return arr_type == GGUF_STRING ? strs.size()
         : (arr_type == GGUF_F32 || arr_type == GGUF_F64) ? floats.size() : ints.size();
}

bool gguf_qtype(int ggml_type, QType* out) {
  static const std::pair<int, QType> map[] = {
      {0, QT_F32},   {1, QT_F16},   {2, QT_Q4_0},  {3, QT_Q4_1},  {6, QT_Q5_0},
      {7, QT_Q5_1},  {8, QT_Q8_0},  {10, QT_Q2_K}, {11, QT_Q3_K}, {12, QT_Q4_K},
      {13, QT_Q5_K}, {14, QT_Q6_K}, {30, QT_BF16}, {39, QT_MXFP4}};
  for (const auto& m : map) {
    if (m.first == ggml_type) {
      *out = m.second;
      return true;
    }
  }
  return false;
}

int gguf_ggml_type(QType t) {
  for (int i = 0; i < 64; ++i) {
    QType q;
    if (gguf_qtype(i, &q) && q == t) return i;
  }
  MOE_CHECK(false);
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv.find(key);
  return it == kv.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("%s: key '%s' is missing", path.c_str(), key.c_str());
  if (!v->is_int())
    fail("%s: key '%s' is %s, expected an integer", path.c_str(), key.c_str(),
         gguf_type_name(v->type));
  return v->i;
}

int64_t GgufFile::get_int(const std::string& key, int64_t def) const {
  return find(key) ? get_int(key) : def;
}

double GgufFile::get_float(const std::string& key, double def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type == GGUF_F32 || v->type == GGUF_F64) return v->f;
  if (v->is_int()) return static_cast<double>(v->i);
  fail("%s: key '%s' is %s, expected a number", path.c_str(), key.c_str(),
       gguf_type_name(v->type));
}

std::string GgufFile::get_str(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("%s: key '%s' is missing", path.c_str(), key.c_str());
  if (v->type != GGUF_STRING)
    fail("%s: key '%s' is %s, expected a string", path.c_str(), key.c_str(),
         gguf_type_name(v->type));
  return v->s;
}

std::string GgufFile::get_str(const std::string& key, const std::string& def) const {
  return find(key) ? get_str(key) : def;
}

void gguf_parse(GgufFile* g, const uint8_t* data, size_t size, const std::string* path,
                bool first) {
  Reader r{data, size, 0, path->c_str()};
  const char* f = path->c_str();
  r.need(4, "the magic");
  if (std::memcmp(data, "GGUF", 4) != 0) fail("%s: bad magic: not a GGUF file", f);
  r.pos = 4;
  const uint32_t version = r.get<uint32_t>("the version");
  if (version != 2 && version != 3)
    fail("%s: GGUF version %u is not supported (2 or 3)", f, version);
  if (first) g->version = version;
  const uint64_t n_tensors = r.get<uint64_t>("the tensor count");
  const uint64_t n_kv = r.get<uint64_t>("the key-value count");
  // A key-value takes at least 12 bytes, a tensor info at least 28.
  if (n_kv > r.left() / 12)
    fail("%s: key-value count %llu is more than the file can hold", f,
         static_cast<unsigned long long>(n_kv));
  if (n_tensors > r.left() / 28)
    fail("%s: tensor count %llu is more than the file can hold", f,
         static_cast<unsigned long long>(n_tensors));
  GgufFile local;  // a later split's key-values: read, checked, not kept
  read_kv(r, first ? g : &local, n_kv);
  const GgufFile& own = first ? *g : local;
  uint64_t align = 32;
  if (const GgufValue* a = own.find("general.alignment")) {
    if (a->type != GGUF_U32)
      fail("%s: key 'general.alignment' is %s, expected u32", f, gguf_type_name(a->type));
    align = a->u;
  }
  if (align == 0 || (align & (align - 1)) != 0 || align > (1u << 20))
    fail("%s: key 'general.alignment' is %llu, not a power of two up to 1 MiB", f,
         static_cast<unsigned long long>(align));
  if (first) g->alignment = align;

  std::vector<Info> infos;
  infos.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) infos.push_back(read_tensor_info(r, i));
  const uint64_t data_start = (r.pos + align - 1) / align * align;
  if (data_start > size && n_tensors > 0)
    fail("%s: truncated: the data section would start at %llu, past the end (%zu bytes)", f,
         static_cast<unsigned long long>(data_start), size);
  const uint64_t data_size = n_tensors > 0 ? size - data_start : 0;

  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [begin, end) of each tensor
  for (Info& in : infos) {
    const char* nm = in.t.name.c_str();
    if (in.offset % align != 0)
      fail("%s: tensor '%s': offset %llu is not a multiple of the alignment %llu", f,
           printable(nm).c_str(), static_cast<unsigned long long>(in.offset),
           static_cast<unsigned long long>(align));
    if (in.offset > data_size || in.t.nbytes > data_size - in.offset)
      fail("%s: tensor '%s': bytes [%llu, %llu) of the data section are out of range (it has "
           "%llu)", f, printable(nm).c_str(), static_cast<unsigned long long>(in.offset),
           static_cast<unsigned long long>(in.offset + in.t.nbytes),
           static_cast<unsigned long long>(data_size));
    in.t.data = data + data_start + in.offset;
    in.t.file = path;
    spans.push_back({in.offset, in.offset + in.t.nbytes});
    if (!g->tensors.emplace(in.t.name, in.t).second)
      fail("%s: tensor '%s' appears twice", f, printable(nm).c_str());
    g->order.push_back(in.t.name);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) {
      for (const Info& in : infos)
        if (in.offset == spans[i].first)
          fail("%s: tensor '%s' overlaps another tensor's data", f,
               printable(in.t.name).c_str());
    }
  }
}

namespace {

template <class T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

void put_str(std::string* out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out->append(s);
}

// One scalar of type t from v (integers from i, floats from f, strings from s).
void put_scalar(std::string* out, GgufType t, int64_t i, double f, const std::string& s) {
  switch (t) {
    case GGUF_U8: case GGUF_BOOL: put<uint8_t>(out, static_cast<uint8_t>(i)); break;
    case GGUF_I8: put<int8_t>(out, static_cast<int8_t>(i)); break;
    case GGUF_U16: put<uint16_t>(out, static_cast<uint16_t>(i)); break;
    case GGUF_I16: put<int16_t>(out, static_cast<int16_t>(i)); break;
    case GGUF_U32: put<uint32_t>(out, static_cast<uint32_t>(i)); break;
    case GGUF_I32: put<int32_t>(out, static_cast<int32_t>(i)); break;
    case GGUF_U64: put<uint64_t>(out, static_cast<uint64_t>(i)); break;
    case GGUF_I64: put<int64_t>(out, i); break;
    case GGUF_F32: put<float>(out, static_cast<float>(f)); break;
    case GGUF_F64: put<double>(out, f); break;
    case GGUF_STRING: put_str(out, s); break;
    default: MOE_CHECK(false);
  }
}

void put_value(std::string* out, const GgufValue& v) {
  put<uint32_t>(out, v.type);
  if (v.type != GGUF_ARRAY) return put_scalar(out, v.type, v.i, v.f, v.s);
  put<uint32_t>(out, v.arr_type);
  put<uint64_t>(out, v.size());
  static const std::string empty;
  for (size_t k = 0; k < v.size(); ++k) {
    if (v.arr_type == GGUF_STRING) put_scalar(out, v.arr_type, 0, 0.0, v.strs[k]);
    else if (v.arr_type == GGUF_F32 || v.arr_type == GGUF_F64) put_scalar(out, v.arr_type, 0, v.floats[k], empty);
    else put_scalar(out, v.arr_type, v.ints[k], 0.0, empty);
  }
}

}  // namespace

void gguf_write(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv,
                const std::vector<GgufWriteTensor>& tensors, uint64_t alignment) {
  MOE_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0);
  std::vector<std::pair<std::string, GgufValue>> all = kv;
  if (alignment != 32) {
    GgufValue a;
    a.type = GGUF_U32;
    a.i = static_cast<int64_t>(alignment);
    all.emplace_back("general.alignment", a);
  }
  std::string head = "GGUF";
  put<uint32_t>(&head, 3);
  put<uint64_t>(&head, tensors.size());
  put<uint64_t>(&head, all.size());
  for (const auto& e : all) {
    put_str(&head, e.first);
    put_value(&head, e.second);
  }
  std::vector<uint64_t> sizes;  // bytes of each tensor
  uint64_t off = 0;
  for (const GgufWriteTensor& t : tensors) {
    MOE_CHECK(!t.ne.empty() && t.ne.size() <= 4);
    put_str(&head, t.name);
    put<uint32_t>(&head, static_cast<uint32_t>(t.ne.size()));
    int64_t rows = 1;
    for (size_t d = 0; d < t.ne.size(); ++d) {
      put<uint64_t>(&head, static_cast<uint64_t>(t.ne[d]));
      if (d > 0) rows *= t.ne[d];
    }
    put<uint32_t>(&head, static_cast<uint32_t>(gguf_ggml_type(t.type)));
    put<uint64_t>(&head, off);
    sizes.push_back(static_cast<uint64_t>(rows * qtype_row_bytes(t.type, t.ne[0])));
    off += (sizes.back() + alignment - 1) / alignment * alignment;
  }
  const std::string pad(static_cast<size_t>(alignment), '\0');
  head.append(pad.data(), static_cast<size_t>((alignment - head.size() % alignment) % alignment));
  AtomicFile f;
  atomic_file_open(&f, path);
  atomic_file_write(&f, head.data(), head.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    atomic_file_write(&f, tensors[i].data, static_cast<size_t>(sizes[i]));
    atomic_file_write(&f, pad.data(), static_cast<size_t>((alignment - sizes[i] % alignment) % alignment));
  }
  atomic_file_commit(&f);
}

bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

namespace {

// "NAME-00001-of-00003.gguf" -> ("NAME", 3); false if path is not a split's first file.
bool split_name(const std::string& path, std::string* stem, int* count) {
  const std::string tail = "-00001-of-00000.gguf";
  if (path.size() < tail.size()) return false;
  const std::string t = path.substr(path.size() - tail.size());
  if (t.compare(0, 10, "-00001-of-") != 0 || t.compare(15, 5, ".gguf") != 0) return false;
  const std::string n = t.substr(10, 5);
  if (n.find_first_not_of("0123456789") != std::string::npos) return false;
  *count = std::stoi(n);
  *stem = path.substr(0, path.size() - tail.size());
  return *count >= 1;
}

}  // namespace

void gguf_open(GgufFile* g, const std::string& path) {
  GgufFile out;
  out.path = path;
  std::string stem;
  int count = 1;
  const bool split = split_name(path, &stem, &count);
  std::vector<std::string> paths = {path};
  for (int i = 2; split && i <= count; ++i)
    paths.push_back(strfmt("%s-%05d-of-%05d.gguf", stem.c_str(), i, count));
  for (size_t i = 0; i < paths.size(); ++i) {
    auto mf = std::make_unique<MappedFile>();
    mapped_file_open(mf.get(), paths[i]);
    out.files.push_back(std::move(mf));
    const MappedFile& m = *out.files.back();
    gguf_parse(&out, m.data, m.size, &m.path, i == 0);
    if (i == 0 && split) {
      const int64_t n = out.get_int("split.count", count);
      if (n != count)
        fail("%s: key 'split.count' is %lld but the file name says %d", path.c_str(),
             static_cast<long long>(n), count);
    }
  }
  *g = std::move(out);
}

}  // namespace moe
