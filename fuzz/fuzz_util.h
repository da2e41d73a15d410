// Helpers shared by the fuzz targets (fuzz/fuzz_*.cpp).
//
// A fuzz input that stands for several files is one byte string with the parts separated by the
// line kFuzzSep ("\n=====\n"), e.g. config.json, then generation_config.json, then
// model.safetensors. A missing part is an empty string.
//
// A safetensors part that starts with '{' is a header only: the file written is the u64 header
// length, the header, then a zero-filled data section as long as the largest data_offsets end in
// the header (capped), so the fuzzer explores the tensor table without having to grow megabytes of
// weights. Any other safetensors part is written byte for byte (the length prefix is fuzzed too).
//
// A target accepts MoeError (the clean rejection every parser must give); anything else that
// escapes (std::out_of_range, nlohmann::json::exception, a crash, a leak, a timeout) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace moe::fuzz {

inline constexpr std::string_view kFuzzSep = "\n=====\n";

// Splits data into at most n parts at kFuzzSep (the last part keeps any further separators).
std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n);

// A fresh empty folder for this process (under $TMPDIR or /tmp), created once and emptied on every
// call; removed at exit.
const std::string& scratch_dir();

// Writes bytes to dir/name (plain write; the scratch folder is private to this process).
void write_scratch(const std::string& name, std::string_view bytes);

// The safetensors file a part stands for (see above).
std::string safetensors_bytes(const std::string& part);

// A clean rejection (MoeError): printed to stderr when MOE_FUZZ_VERBOSE is set (to check that
// seeds get past the parsers), else ignored.
void rejected(const std::exception& e);

// Path of a file of the source tree (tests' fixtures) compiled into the target.
std::string source_path(const std::string& rel);

}  // namespace moe::fuzz
