// safetensors reader and writer: round trips, sharded checkpoints, one test per kind of bad input
// (each error must be one line naming the file and the tensor or field), and a deterministic
// mutation sweep that must never crash (the suite also runs under ASan/UBSan).
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(f.good()) << path;
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A raw safetensors file: length prefix, header text, data section.
std::string st_bytes(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

// One header entry: "name":{"dtype":..,"shape":..,"data_offsets":[b,e]}.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t b, uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
}

// Runs fn, expecting a one-line MoeError that contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const MoeError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
    return;
  }
  ADD_FAILURE() << "no MoeError thrown";
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir = moe_test::make_temp_dir("st"); }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return dir + "/" + name; }

  std::vector<std::string> dir_entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  // Writes `bytes` as <name> and expects opening it to fail naming the file and `parts`.
  void expect_bad_file(const std::string& bytes, const std::vector<std::string>& parts,
                       const std::string& name = "bad.safetensors") {
    SCOPED_TRACE(name + ": " + bytes.substr(std::min<size_t>(bytes.size(), 8)));
    write_bytes(path(name), bytes);
    std::vector<std::string> all = parts;
    all.push_back(path(name));
    StArchive ar;
    expect_error([&] { st_open_file(&ar, path(name)); }, all);
    EXPECT_TRUE(ar.tensors.empty());
    EXPECT_TRUE(ar.files.empty());
  }

  void expect_bad_header(const std::string& header, const std::vector<std::string>& parts,
                         const std::string& data = std::string(64, '\0')) {
    expect_bad_file(st_bytes(header, data), parts);
  }

  std::string dir;
};

// ---- round trips ----

TEST_F(SafetensorsTest, RoundTripAllDtypesWithMetadata) {
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f};
  std::vector<uint16_t> bf16, f16;
  for (float v : {1.0f, -0.5f, 3.0e38f, 1e-40f}) bf16.push_back(f32_to_bf16(v));
  for (float v : {1.0f, -0.5f, 65504.0f, 6e-8f}) f16.push_back(f32_to_f16(v));
  const std::vector<int64_t> i64 = {0, -1, std::numeric_limits<int64_t>::max()};
  const float scalar = 42.0f;
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "a \"quoted\" b"}};
  // Deliberately not in name order: the file must keep the order given.
  const std::vector<StWriteTensor> ts = {
      {"z.f32", DT_F32, {2, 3}, f32.data()}, {"a.bf16", DT_BF16, {4}, bf16.data()},
      {"m.f16", DT_F16, {2, 2}, f16.data()}, {"b.i64", DT_I64, {3}, i64.data()},
      {"scalar", DT_F32, {}, &scalar},       {"empty", DT_F32, {0, 4}, nullptr},
  };
  const std::string p = path("rt.safetensors");
  st_write(p, ts, meta);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"rt.safetensors"});  // no temp file left

  const std::string raw = read_bytes(p);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u);
  const size_t total = 24 + 8 + 8 + 24 + 4;
  ASSERT_EQ(raw.size(), 8 + n + total);
  const std::string header = raw.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":", 0), 0u) << header;
  size_t last = 0;
  for (const auto& t : ts) {
    size_t at = header.find("\"" + t.name + "\"");
    ASSERT_NE(at, std::string::npos) << t.name;
    EXPECT_GT(at, last) << t.name;
    last = at;
  }
  EXPECT_EQ(std::memcmp(raw.data() + 8 + n, f32.data(), 24), 0);  // data in the given order

  StArchive ar;
  st_open_file(&ar, p);
  EXPECT_EQ(ar.origin, p);
  EXPECT_EQ(ar.metadata, meta);
  ASSERT_EQ(ar.files.size(), 1u);
  ASSERT_EQ(ar.tensors.size(), ts.size());
  const MappedFile& mf = *ar.files[0];
  for (const auto& w : ts) {
    SCOPED_TRACE(w.name);
    const StTensor& t = ar.get(w.name);
    EXPECT_EQ(t.name, w.name);
    EXPECT_EQ(t.dtype, w.dtype);
    EXPECT_EQ(t.shape, w.shape);
    int64_t numel = 1;
    for (int64_t d : w.shape) numel *= d;
    EXPECT_EQ(t.numel(), numel);
    EXPECT_EQ(t.nbytes, static_cast<size_t>(numel) * dtype_size(w.dtype));
    ASSERT_NE(t.file, nullptr);
    EXPECT_EQ(*t.file, p);
    EXPECT_GE(t.data, mf.data + 8 + n);  // zero copy: points into the map
    EXPECT_LE(t.data + t.nbytes, mf.data + mf.size);
    if (t.nbytes) {
      EXPECT_EQ(std::memcmp(t.data, w.data, t.nbytes), 0);
    }
  }
  std::vector<float> back(3);
  dtype_to_f32(DT_BF16, ar.get("a.bf16").data, back.data(), 3);
  EXPECT_EQ(back[1], -0.5f);
  EXPECT_EQ(ar.find("nope"), nullptr);
  expect_error([&] { ar.get("nope"); }, {p, "'nope'", "missing"});
}

TEST_F(SafetensorsTest, NoMetadataMeansNoMetadataKey) {
  const float v[2] = {1, 2};
  st_write(path("x.safetensors"), {{"v", DT_F32, {2}, v}});
  EXPECT_EQ(read_bytes(path("x.safetensors")).find("__metadata__"), std::string::npos);
  StArchive ar;
  st_open_file(&ar, path("x.safetensors"));
  EXPECT_TRUE(ar.metadata.empty());
  EXPECT_EQ(ar.get("v").nbytes, 8u);

  st_write(path("none.safetensors"), {});
  st_open_file(&ar, path("none.safetensors"));  // replaces the previous contents
  EXPECT_TRUE(ar.tensors.empty());
  EXPECT_EQ(ar.files.size(), 1u);
}

TEST_F(SafetensorsTest, RewriteReplacesFileAtomically) {
  const float a[1] = {1.0f}, b[2] = {2.0f, 3.0f};
  const std::string p = path("w.safetensors");
  st_write(p, {{"t", DT_F32, {1}, a}});
  StArchive old_ar;
  st_open_file(&old_ar, p);
  st_write(p, {{"t", DT_F32, {2}, b}});
  // The old mapping still sees the old file: the new one was renamed over it.
  float v;
  std::memcpy(&v, old_ar.get("t").data, 4);
  EXPECT_EQ(v, 1.0f);
  StArchive ar;
  st_open_file(&ar, p);
  EXPECT_EQ(ar.get("t").shape, std::vector<int64_t>{2});
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"w.safetensors"});
}

TEST_F(SafetensorsTest, WriteRejectsBadInput) {
  const float v[4] = {};
  const std::string p = path("out.safetensors");
  expect_error(
      [&] {
        st_write(p, {{"a", DT_F32, {1}, v}, {"a", DT_F32, {1}, v}});
      },
      {p, "'a'", "twice"});
  expect_error(
      [&] {
        st_write(p, {{"a", DT_F32, {1}, v}, {"n", DT_F32, {2, 2}, nullptr}});
      },
      {p, "'n'", "null"});
  expect_error([&] { st_write(p, {{"neg", DT_F32, {2, -1}, v}}); }, {p, "'neg'", "negative"});
  expect_error([&] { st_write(p, {{"__metadata__", DT_F32, {1}, v}}); }, {p, "__metadata__"});
  expect_error([&] { st_write(p, {{"big", DT_F32, {int64_t{1} << 62, 8}, v}}); }, {p, "'big'"});
  expect_error([&] { st_write(p, {{"bad\xff", DT_F32, {1}, v}}); }, {p});  // not UTF-8
  expect_error(
      [&] {
        st_write(path("no/such/dir/x.safetensors"), {{"a", DT_F32, {1}, v}});
      },
      {"no/such/dir/x.safetensors"});
  EXPECT_TRUE(dir_entries().empty());          // nothing written, no temp files left
  st_write(p, {{"z", DT_F32, {0}, nullptr}});  // null is fine for an empty tensor
  StArchive ar;
  st_open_file(&ar, p);
  EXPECT_EQ(ar.get("z").nbytes, 0u);
}

TEST_F(SafetensorsTest, GapsTrailingDataAndEmptyTensorsAreAllowed) {
  std::string data(24, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i);
  const std::string h = "{" + entry("a", "F32", "[1]", 0, 4) + "," +
                        entry("b", "I16", "[2]", 8, 12) + "," + entry("e", "F32", "[0]", 2, 2) +
                        "," + entry("end", "U8", "[0, 3]", 24, 24) + ",\"__metadata__\":{}}  ";
  write_bytes(path("gap.safetensors"), st_bytes(h, data));
  StArchive ar;
  st_open_file(&ar, path("gap.safetensors"));
  ASSERT_EQ(ar.tensors.size(), 4u);
  const uint8_t* base = ar.files[0]->data + 8 + h.size();
  EXPECT_EQ(ar.get("a").data, base);
  EXPECT_EQ(ar.get("b").data, base + 8);
  EXPECT_EQ(ar.get("b").data[0], 8);
  EXPECT_EQ(ar.get("e").nbytes, 0u);
  EXPECT_EQ(ar.get("end").numel(), 0);
  EXPECT_EQ(ar.get("b").dtype, DT_I16);
}

TEST_F(SafetensorsTest, FileHelpers) {
  const std::string p = path("t.txt");
  EXPECT_FALSE(file_exists(p));
  write_file_atomic(p, "hello\n", 6);
  EXPECT_TRUE(file_exists(p));
  EXPECT_TRUE(file_exists(dir));
  EXPECT_EQ(read_text_file(p), "hello\n");
  write_file_atomic(p, nullptr, 0);
  EXPECT_EQ(read_text_file(p), "");
  MappedFile mf;
  mapped_file_open(&mf, p);  // empty: no mapping
  EXPECT_EQ(mf.data, nullptr);
  EXPECT_EQ(mf.size, 0u);
  EXPECT_EQ(mf.path, p);
  expect_error([&] { read_text_file(path("absent.txt")); }, {path("absent.txt"), "No such file"});
  expect_error([&] { read_text_file(dir); }, {dir, "directory"});
  fs::create_directories(path("sub"));  // renaming over a directory fails: the temp file goes
  expect_error([&] { write_file_atomic(path("sub"), "x", 1); }, {path("sub")});
  EXPECT_EQ(dir_entries(), (std::vector<std::string>{"sub", "t.txt"}));
}

// ---- bad files, one case each ----

TEST_F(SafetensorsTest, FileShorterThanLengthPrefix) {
  expect_bad_file("", {"too short"});
  expect_bad_file("\x01\x02\x03", {"too short"});
  expect_bad_file(std::string(7, '\0'), {"too short"});
  StArchive ar;
  expect_error([&] { st_open_file(&ar, path("absent.safetensors")); },
               {path("absent.safetensors"), "No such file"});
  expect_error([&] { st_open_file(&ar, dir); }, {dir, "directory"});
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  expect_bad_file(le64(100) + "{}", {"header length 100"});
  expect_bad_file(le64(9), {"header length 9"});
  expect_bad_file(le64(~uint64_t{0}) + "{}", {"header length 18446744073709551615"});
  expect_bad_file(le64(uint64_t{1} << 63) + std::string(64, ' '), {"header length"});
  // Fits in a (sparse) file but is absurd: rejected before anything is parsed.
  const std::string p = path("huge.safetensors");
  write_bytes(p, le64(150000000) + "{");
  fs::resize_file(p, 150000100);
  StArchive ar;
  expect_error([&] { st_open_file(&ar, p); }, {p, "header length 150000000", "limit"});
}

TEST_F(SafetensorsTest, HeaderNotJsonOrNotObject) {
  expect_bad_header("{\"a\":", {"header", "JSON"});
  expect_bad_header("", {"header", "JSON"});
  expect_bad_header("{} x", {"header", "JSON"});
  expect_bad_header("{\"a\xff\":1}", {"header", "JSON"});  // not UTF-8
  expect_bad_header("[1, 2]", {"header", "not a JSON object", "array"});
  expect_bad_header("42      ", {"header", "not a JSON object"});
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  expect_bad_header("{\"w.x\": 5}", {"tensor 'w.x'", "object"});
  expect_bad_header("{\"w.x\": [0, 4]}", {"tensor 'w.x'", "object"});
}

TEST_F(SafetensorsTest, MissingOrWronglyTypedFields) {
  const std::string s = "\"shape\":[1]", o = "\"data_offsets\":[0,4]", d = "\"dtype\":\"F32\"";
  expect_bad_header("{\"t\":{" + s + "," + o + "}}", {"tensor 't'", "missing field 'dtype'"});
  expect_bad_header("{\"t\":{" + d + "," + o + "}}", {"tensor 't'", "missing field 'shape'"});
  expect_bad_header("{\"t\":{" + d + "," + s + "}}",
                    {"tensor 't'", "missing field 'data_offsets'"});
  expect_bad_header("{\"t\":{\"dtype\":4," + s + "," + o + "}}", {"tensor 't'", "'dtype'"});
  expect_bad_header("{\"t\":{" + d + ",\"shape\":\"1\"," + o + "}}", {"tensor 't'", "'shape'"});
  expect_bad_header("{\"t\":{" + d + ",\"shape\":[1.0]," + o + "}}", {"tensor 't'", "'shape'"});
  expect_bad_header("{\"t\":{" + d + ",\"shape\":[null]," + o + "}}", {"tensor 't'", "'shape'"});
  expect_bad_header("{\"t\":{" + d + "," + s + ",\"data_offsets\":[0]}}",
                    {"tensor 't'", "'data_offsets'"});
  expect_bad_header("{\"t\":{" + d + "," + s + ",\"data_offsets\":[0,4,8]}}",
                    {"tensor 't'", "'data_offsets'"});
  expect_bad_header("{\"t\":{" + d + "," + s + ",\"data_offsets\":{}}}",
                    {"tensor 't'", "'data_offsets'"});
  expect_bad_header("{\"t\":{" + d + "," + s + ",\"data_offsets\":[0,4.0]}}",
                    {"tensor 't'", "'data_offsets'"});
  expect_bad_header("{\"t\":{" + d + "," + s + ",\"data_offsets\":[-4,0]}}",
                    {"tensor 't'", "data_offsets[0] is negative"});
  expect_bad_header("{\"t\":{" + d + "," + s + ",\"data_offsets\":[0,1e400]}}",
                    {"JSON"});  // out of range number: the parser rejects it
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_bad_header("{" + entry("q.w", "Q4_K", "[1]", 0, 1) + "}",
                    {"tensor 'q.w'", "unknown dtype 'Q4_K'"});
  expect_bad_header("{" + entry("q.w", "f32", "[1]", 0, 4) + "}", {"tensor 'q.w'", "'f32'"});
}

TEST_F(SafetensorsTest, NegativeDim) {
  expect_bad_header("{" + entry("n", "F32", "[2, -3]", 0, 0) + "}",
                    {"tensor 'n'", "shape[1] is negative (-3)"});
}

TEST_F(SafetensorsTest, ShapeProductOverflow) {
  expect_bad_header("{" + entry("big", "F32", "[4294967296, 4294967296, 4]", 0, 0) + "}",
                    {"tensor 'big'", "shape [4294967296, 4294967296, 4]"});
  // Element count fits, byte count does not.
  expect_bad_header("{" + entry("big", "F64", "[1152921504606846976, 2]", 0, 0) + "}",
                    {"tensor 'big'", "F64"});
  expect_bad_header("{" + entry("big", "U8", "[18446744073709551615]", 0, 0) + "}",
                    {"tensor 'big'", "shape[0]"});
}

TEST_F(SafetensorsTest, OffsetsBeginAfterEnd) {
  expect_bad_header("{" + entry("r", "U8", "[4]", 8, 4) + "}",
                    {"tensor 'r'", "data_offsets [8, 4]", "begin after end"});
}

TEST_F(SafetensorsTest, OffsetsEndBeyondDataSection) {
  expect_bad_header("{" + entry("r", "F32", "[4]", 56, 72) + "}",
                    {"tensor 'r'", "data_offsets [56, 72]", "64 bytes"});
  expect_bad_header("{" + entry("r", "U8", "[0]", 65, 65) + "}", {"tensor 'r'", "[65, 65]"});
  const uint64_t big = ~uint64_t{0};
  expect_bad_header("{" + entry("r", "U8", "[1]", big - 1, big) + "}", {"tensor 'r'"});
}

TEST_F(SafetensorsTest, SpanDoesNotMatchShape) {
  expect_bad_file(
      st_bytes("{" + entry("model.norm.weight", "F32", "[4]", 0, 12) + "}", std::string(16, '\0')),
      {"tensor 'model.norm.weight': data_offsets [0, 12] span 12 bytes but shape [4] "
       "x F32 needs 16"},
      "model.safetensors");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_bad_header(
      "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}",
      {"tensor 'b'", "overlap", "'a'"});
  // Detected whatever the order in the header, and across a non-overlapping tensor in between.
  expect_bad_header("{" + entry("x", "U8", "[4]", 2, 6) + "," + entry("y", "U8", "[32]", 0, 32) +
                        "," + entry("z", "U8", "[4]", 10, 14) + "}",
                    {"overlap", "'y'"});
  expect_bad_header(
      "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 0, 8) + "}",
      {"tensor 'b'", "overlap", "'a'"});
}

TEST_F(SafetensorsTest, DuplicateNameInHeader) {
  expect_bad_header("{" + entry("d", "U8", "[1]", 0, 1) + "," + entry("d", "U8", "[1]", 1, 2) + "}",
                    {"tensor 'd'", "more than once"});
}

TEST_F(SafetensorsTest, MetadataMustMapStringsToStrings) {
  expect_bad_header("{\"__metadata__\":[\"pt\"]}", {"__metadata__", "object"});
  expect_bad_header("{\"__metadata__\":\"pt\"}", {"__metadata__", "object"});
  expect_bad_header("{\"__metadata__\":{\"format\":\"pt\",\"step\":5}}",
                    {"__metadata__", "'step'"});
  expect_bad_header("{\"__metadata__\":{\"nested\":{}}}", {"__metadata__", "'nested'"});
  expect_bad_header("{\"__metadata__\":{},\"__metadata__\":{}}",
                    {"__metadata__", "more than once"});
}

TEST_F(SafetensorsTest, ControlCharactersInNamesStayOnOneLine) {
  expect_bad_header("{\"a\\nb\": 1}", {"tensor 'a\\x0ab'"});
}

// ---- checkpoint directories ----

class SafetensorsDirTest : public SafetensorsTest {
 protected:
  const std::string s1 = "model-00001-of-00002.safetensors";
  const std::string s2 = "model-00002-of-00002.safetensors";
  const float va[2] = {1, 2}, vb[3] = {3, 4, 5}, vc[1] = {6};

  // Shard 1 holds a and b, shard 2 holds c.
  void write_shards() {
    st_write(path(s1), {{"a", DT_F32, {2}, va}, {"b", DT_F32, {3}, vb}}, {{"format", "pt"}});
    st_write(path(s2), {{"c", DT_F32, {1}, vc}}, {{"format", "other"}});
  }

  std::string index_json(const std::string& weight_map) const {
    return "{\"metadata\":{\"total_size\":24},\"weight_map\":" + weight_map + "}";
  }
  std::string good_map() const {
    return "{\"a\":\"" + s1 + "\",\"b\":\"" + s1 + "\",\"c\":\"" + s2 + "\"}";
  }

  void expect_bad_dir(const std::string& index_text, const std::vector<std::string>& parts) {
    SCOPED_TRACE(index_text);
    write_bytes(path("model.safetensors.index.json"), index_text);
    StArchive ar;
    expect_error([&] { st_open_dir(&ar, dir); }, parts);
    EXPECT_TRUE(ar.tensors.empty());
  }
};

TEST_F(SafetensorsDirTest, SingleFile) {
  st_write(path("model.safetensors"), {{"a", DT_F32, {2}, va}}, {{"format", "pt"}});
  StArchive ar;
  st_open_dir(&ar, dir);
  EXPECT_EQ(ar.origin, dir);
  EXPECT_EQ(*ar.get("a").file, dir + "/model.safetensors");
  EXPECT_EQ(ar.metadata.at("format"), "pt");
  expect_error([&] { ar.get("b"); }, {dir + ": tensor 'b' is missing"});
  st_open_dir(&ar, dir + "/");  // a trailing slash does not double up
  EXPECT_EQ(*ar.get("a").file, dir + "/model.safetensors");

  write_bytes(path("model.safetensors"), "short");
  expect_error([&] { st_open_dir(&ar, dir); }, {dir + "/model.safetensors: "});
  EXPECT_EQ(ar.tensors.size(), 1u);  // a failed open leaves the archive as it was
}

TEST_F(SafetensorsDirTest, NothingToOpen) {
  StArchive ar;
  expect_error([&] { st_open_dir(&ar, dir); }, {dir, "model.safetensors"});
  expect_error([&] { st_open_dir(&ar, dir + "/nope"); }, {dir + "/nope", "does not exist"});
}

TEST_F(SafetensorsDirTest, Sharded) {
  write_shards();
  write_bytes(path("model.safetensors.index.json"), index_json(good_map()));
  // A stray model.safetensors is ignored when there is an index.
  write_bytes(path("model.safetensors"), "junk");
  StArchive ar;
  st_open_dir(&ar, dir);
  EXPECT_EQ(ar.origin, dir);
  EXPECT_EQ(ar.files.size(), 2u);
  ASSERT_EQ(ar.tensors.size(), 3u);
  EXPECT_EQ(*ar.get("a").file, path(s1));
  EXPECT_EQ(*ar.get("b").file, path(s1));
  EXPECT_EQ(*ar.get("c").file, path(s2));
  EXPECT_EQ(std::memcmp(ar.get("b").data, vb, sizeof(vb)), 0);
  EXPECT_EQ(std::memcmp(ar.get("c").data, vc, sizeof(vc)), 0);
  EXPECT_EQ(ar.metadata.at("format"), "pt");  // from the first shard
}

TEST_F(SafetensorsDirTest, BadIndexJson) {
  write_shards();
  const std::string idx = "model.safetensors.index.json";
  expect_bad_dir("{\"weight_map\":", {idx, "JSON"});
  expect_bad_dir("[]", {idx, "not a JSON object"});
  expect_bad_dir("{\"metadata\":{}}", {idx, "missing field 'weight_map'"});
  expect_bad_dir("{\"weight_map\":[]}", {idx, "'weight_map'", "array"});
  expect_bad_dir("{\"weight_map\":{}}", {idx, "weight_map is empty"});
  expect_bad_dir(index_json("{\"a\":1}"), {idx, "weight_map['a']", "string"});
}

TEST_F(SafetensorsDirTest, ShardNamesMustBePlainFileNames) {
  write_shards();
  const std::string idx = "model.safetensors.index.json";
  expect_bad_dir(index_json("{\"a\":\"sub/x.safetensors\"}"), {idx, "'a'", "sub/x.safetensors"});
  expect_bad_dir(index_json("{\"a\":\"../" + s1 + "\"}"), {idx, "'a'", "../" + s1});
  expect_bad_dir(index_json("{\"a\":\"..\"}"), {idx, "'a'"});
  expect_bad_dir(index_json("{\"a\":\"\"}"), {idx, "'a'"});
  expect_bad_dir(index_json("{\"a\":\"/etc/passwd\"}"), {idx, "'a'", "/etc/passwd"});
}

TEST_F(SafetensorsDirTest, ShardFileMissing) {
  write_shards();
  expect_bad_dir(index_json("{\"a\":\"" + s1 + "\",\"z\":\"gone.safetensors\"}"),
                 {"model.safetensors.index.json", "'z'", "gone.safetensors", "does not exist"});
}

TEST_F(SafetensorsDirTest, ListedTensorMissingFromItsShard) {
  write_shards();
  expect_bad_dir(index_json("{\"a\":\"" + s1 + "\",\"b\":\"" + s1 + "\",\"c\":\"" + s2 +
                            "\",\"ghost\":\"" + s1 + "\"}"),
                 {"model.safetensors.index.json", "tensor 'ghost'", s1, "does not contain it"});
  // Listed in the wrong shard.
  expect_bad_dir(index_json("{\"a\":\"" + s2 + "\",\"b\":\"" + s1 + "\",\"c\":\"" + s2 + "\"}"),
                 {"model.safetensors.index.json", "tensor 'a'", s2});
}

TEST_F(SafetensorsDirTest, ShardTensorNotInWeightMap) {
  write_shards();
  expect_bad_dir(index_json("{\"a\":\"" + s1 + "\",\"c\":\"" + s2 + "\"}"),
                 {path(s1), "tensor 'b'", "not listed", "model.safetensors.index.json"});
}

TEST_F(SafetensorsDirTest, DuplicateTensorAcrossShards) {
  write_shards();
  st_write(path(s2), {{"c", DT_F32, {1}, vc}, {"a", DT_F32, {2}, va}});
  expect_bad_dir(index_json(good_map()), {"tensor 'a'", path(s1), path(s2)});
}

TEST_F(SafetensorsDirTest, BadShardNamesTheShard) {
  write_shards();
  write_bytes(path(s2), st_bytes("{" + entry("c", "F32", "[2]", 0, 4) + "}", "abcd"));
  expect_bad_dir(index_json(good_map()), {path(s2), "tensor 'c'", "span 4 bytes"});
}

// ---- robustness ----

// Opens `p`; success and MoeError are both fine. On success every tensor must lie in its map.
void open_and_touch(const std::string& p, const std::string& what) {
  StArchive ar;
  try {
    st_open_file(&ar, p);
  } catch (const MoeError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": " << msg;
    EXPECT_EQ(msg.rfind(p, 0), 0u) << what << ": " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": unexpected exception: " << e.what();
    return;
  }
  ASSERT_EQ(ar.files.size(), 1u) << what;
  const MappedFile& f = *ar.files[0];
  unsigned sum = 0;
  for (const auto& kv : ar.tensors) {
    const StTensor& t = kv.second;
    ASSERT_GE(t.data, f.data + 8) << what << ": " << kv.first;
    ASSERT_LE(t.data + t.nbytes, f.data + f.size) << what << ": " << kv.first;
    ASSERT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * dtype_size(t.dtype)) << what;
    for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
  }
  (void)sum;
}

TEST_F(SafetensorsTest, MutatedAndTruncatedFilesNeverCrash) {
  const float f[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t h[4] = {1, 2, 3, 4};
  const int64_t q[2] = {7, 8};
  const std::string good_path = path("good.safetensors");
  st_write(good_path,
           {{"layer.0.w", DT_F32, {2, 3}, f},
            {"layer.0.b", DT_BF16, {4}, h},
            {"ids", DT_I64, {2}, q},
            {"none", DT_F16, {0}, nullptr}},
           {{"format", "pt"}});
  const std::string good = read_bytes(good_path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(good[i]);
  ASSERT_LT(8 + n, good.size());
  open_and_touch(good_path, "unmodified");

  const std::string p = path("mut.safetensors");
  const uint8_t subst[] = {0x00, 0x01, 0x20, 0x7f, 0x80, 0xff, '0', '9', '-', '"', '}', ']', ','};
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    for (uint8_t v : subst) {
      std::string m = good;
      m[pos] = static_cast<char>(v);
      write_bytes(p, m);
      open_and_touch(p, "byte " + std::to_string(pos) + " = " + std::to_string(v));
    }
    std::string m = good;
    m[pos] = static_cast<char>(m[pos] ^ 0x01);
    write_bytes(p, m);
    open_and_touch(p, "byte " + std::to_string(pos) + " ^ 1");
  }
  for (size_t len = 0; len < good.size(); ++len) {
    write_bytes(p, good.substr(0, len));
    open_and_touch(p, "truncated to " + std::to_string(len));
  }
  // Deterministic multi-byte mutations (a fixed LCG), then growth of the length prefix.
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int iter = 0; iter < 400; ++iter) {
    std::string m = good;
    int k = 1 + next() % 4;
    for (int j = 0; j < k; ++j) m[next() % (8 + n)] = static_cast<char>(next() & 0xff);
    if (next() % 4 == 0) m.resize(next() % m.size());
    write_bytes(p, m);
    open_and_touch(p, "random mutation " + std::to_string(iter));
  }
  for (uint64_t delta : {1ull, 7ull, 8ull, 1000ull}) {
    std::string m = le64(n + delta) + good.substr(8);
    write_bytes(p, m);
    open_and_touch(p, "length + " + std::to_string(delta));
    m = le64(n - std::min<uint64_t>(n, delta)) + good.substr(8);
    write_bytes(p, m);
    open_and_touch(p, "length - " + std::to_string(delta));
  }
}

}  // namespace
}  // namespace moe
