// Helpers shared by the fuzz targets, see fuzz_util.h.
#include "fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace moe::fuzz {

namespace {

constexpr uint64_t kMaxDataBytes = 4u << 20;  // zero-filled data section of a header-only part

struct Scratch {
  std::string dir;
  Scratch() {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/moe_fuzz_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    dir = buf.data();
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

Scratch& scratch() {
  static Scratch s;
  return s;
}

// Largest data_offsets end named in a header (0 when there is none or the header is not JSON).
uint64_t data_end(const std::string& header) {
  nlohmann::json j = nlohmann::json::parse(header, nullptr, false);
  uint64_t end = 0;
  if (!j.is_object()) return 0;
  for (const auto& [name, t] : j.items()) {
    if (!t.is_object() || !t.contains("data_offsets")) continue;
    const auto& o = t["data_offsets"];
    if (o.is_array() && o.size() == 2 && o[1].is_number_unsigned())
      end = std::max(end, o[1].get<uint64_t>());
  }
  return std::min(end, kMaxDataBytes);
}

}  // namespace

std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  while (parts.size() + 1 < n) {
    size_t p = s.find(kFuzzSep);
    if (p == std::string_view::npos) break;
    parts.emplace_back(s.substr(0, p));
    s.remove_prefix(p + kFuzzSep.size());
  }
  parts.emplace_back(s);
  parts.resize(n);
  return parts;
}

const std::string& scratch_dir() {
  Scratch& s = scratch();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(s.dir, ec)) fs::remove_all(e.path(), ec);
  return s.dir;
}

void write_scratch(const std::string& name, std::string_view bytes) {
  const std::string path = scratch().dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::abort();
  }
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::string safetensors_bytes(const std::string& part) {
  if (part.empty() || part[0] != '{') return part;
  std::string out(8, '\0');
  uint64_t n = part.size();
  for (int k = 0; k < 8; ++k) out[k] = static_cast<char>((n >> (8 * k)) & 0xff);
  out += part;
  out.append(data_end(part), '\0');
  return out;
}

void rejected(const std::exception& e) {
  static const bool verbose = std::getenv("MOE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
}

std::string source_path(const std::string& rel) { return std::string(MOE_SOURCE_DIR) + "/" + rel; }

}  // namespace moe::fuzz
