// Element types of stored tensors and conversions to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace moe {

enum DType {
  DT_F32,
  DT_F16,
  DT_BF16,
  DT_F64,
  DT_I64,
  DT_I32,
  DT_I16,
  DT_I8,
  DT_U8,
  DT_BOOL,
  DT_COUNT
};

// Bytes per element.
size_t dtype_size(DType t);
// Safetensors spelling ("F32", "BF16", ...).
const char* dtype_name(DType t);
// Parses a safetensors dtype string; returns false if unknown.
bool dtype_parse(const std::string& s, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of a float type (F32, F16, BF16, F64) to fp32. src may be unaligned.
void dtype_to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace moe
