// dtype names and sizes, and the bf16/f16 <-> f32 conversions: exact round trips of every 16-bit
// pattern, round-to-nearest-even at every midpoint, subnormals, overflow, inf and NaN.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace moe {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

bool bf16_is_nan(uint16_t h) {
  return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0;
}
bool f16_is_nan(uint16_t h) {
  return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

TEST(DTypeTest, NamesSizesAndParse) {
  for (int i = 0; i < DT_COUNT; ++i) {
    DType t = static_cast<DType>(i), back = DT_COUNT;
    ASSERT_TRUE(dtype_parse(dtype_name(t), &back)) << dtype_name(t);
    EXPECT_EQ(back, t);
  }
  EXPECT_EQ(dtype_size(DT_F32), 4u);
  EXPECT_EQ(dtype_size(DT_BF16), 2u);
  EXPECT_EQ(dtype_size(DT_F16), 2u);
  EXPECT_EQ(dtype_size(DT_I64), 8u);
  EXPECT_EQ(dtype_size(DT_BOOL), 1u);
  DType t;
  EXPECT_FALSE(dtype_parse("f32", &t));
  EXPECT_FALSE(dtype_parse("", &t));
  EXPECT_FALSE(dtype_parse("F8_E4M3", &t));
}

TEST(DTypeTest, Bf16RoundTripsEveryPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    uint16_t h = static_cast<uint16_t>(i);
    float f = bf16_to_f32(h);
    EXPECT_EQ(to_bits(f), i << 16);
    uint16_t back = f32_to_bf16(f);
    if (bf16_is_nan(h)) {
      EXPECT_TRUE(bf16_is_nan(back)) << std::hex << i;
    } else {
      EXPECT_EQ(back, h) << std::hex << i;
    }
  }
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808000u)), 0x3f80u);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f818000u)), 0x3f82u);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808001u)), 0x3f81u);  // just above the tie
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f807fffu)), 0x3f80u);  // just below the tie
  EXPECT_EQ(f32_to_bf16(from_bits(0xbf818000u)), 0xbf82u);  // negative tie
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f7fffffu)), 0x3f80u);  // carries into the exponent
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80u);  // FLT_MAX rounds to inf
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f7f7fffu)), 0x7f7fu);  // stays the largest finite
  // Every midpoint between neighbouring positive finite bf16 values, and its neighbours.
  for (uint32_t h = 0; h < 0x7f7fu; ++h) {
    uint32_t lo = h << 16, mid = lo | 0x8000u;
    uint16_t even = static_cast<uint16_t>((h & 1u) ? h + 1 : h);
    ASSERT_EQ(f32_to_bf16(from_bits(mid)), even) << std::hex << h;
    ASSERT_EQ(f32_to_bf16(from_bits(mid - 1)), h) << std::hex << h;
    ASSERT_EQ(f32_to_bf16(from_bits(mid + 1)), h + 1) << std::hex << h;
    ASSERT_EQ(f32_to_bf16(from_bits(mid | 0x80000000u)), even | 0x8000u) << std::hex << h;
  }
}

TEST(DTypeTest, Bf16SubnormalsInfNan) {
  EXPECT_EQ(bf16_to_f32(0x0001u), std::ldexp(1.0f, -133));
  EXPECT_EQ(f32_to_bf16(std::ldexp(1.0f, -133)), 0x0001u);
  EXPECT_EQ(f32_to_bf16(std::ldexp(1.0f, -134)), 0x0000u);  // tie to even zero
  EXPECT_EQ(f32_to_bf16(std::ldexp(3.0f, -134)), 0x0002u);  // tie to even 2
  EXPECT_EQ(f32_to_bf16(from_bits(0x00000001u)), 0x0000u);  // tiniest f32 subnormal
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000u);
  EXPECT_TRUE(std::signbit(bf16_to_f32(0x8000u)));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f32_to_bf16(inf), 0x7f80u);
  EXPECT_EQ(f32_to_bf16(-inf), 0xff80u);
  EXPECT_EQ(bf16_to_f32(0x7f80u), inf);
  EXPECT_EQ(bf16_to_f32(0xff80u), -inf);
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0u)));
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // NaNs whose payload lives only in the low 16 bits must not become inf.
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(from_bits(0x7f800001u))));
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(from_bits(0xff800001u))));
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(from_bits(0x7fffffffu))));
}

TEST(DTypeTest, F16RoundTripsEveryPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    uint16_t h = static_cast<uint16_t>(i);
    float f = f16_to_f32(h);
    uint16_t back = f32_to_f16(f);
    if (f16_is_nan(h)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << i;
      EXPECT_TRUE(f16_is_nan(back)) << std::hex << i;
    } else {
      EXPECT_EQ(back, h) << std::hex << i;
    }
  }
}

TEST(DTypeTest, F16KnownValues) {
  EXPECT_EQ(f16_to_f32(0x3c00u), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000u), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bffu), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0400u), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(f16_to_f32(0x0001u), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ffu), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00u);
  EXPECT_EQ(f32_to_f16(0.5f), 0x3800u);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bffu);
}

TEST(DTypeTest, F16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00u);  // tie, even stays
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02u);  // tie, odd rounds up
  EXPECT_EQ(f32_to_f16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01u);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bffu);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00u);  // tie between 65504 and 65536 goes to inf
  EXPECT_EQ(f32_to_f16(1e9f), 0x7c00u);
  EXPECT_EQ(f32_to_f16(-1e9f), 0xfc00u);
  // Every midpoint between neighbouring positive finite f16 values (subnormals included).
  for (uint32_t h = 0; h < 0x7bffu; ++h) {
    float lo = f16_to_f32(static_cast<uint16_t>(h)), hi = f16_to_f32(static_cast<uint16_t>(h + 1));
    float mid = lo + (hi - lo) * 0.5f;  // exact: f16 has far fewer bits than f32
    ASSERT_EQ(mid - lo, hi - mid) << std::hex << h;
    uint16_t even = static_cast<uint16_t>((h & 1u) ? h + 1 : h);
    ASSERT_EQ(f32_to_f16(mid), even) << std::hex << h;
    ASSERT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(f32_to_f16(std::nextafter(mid, hi)), h + 1) << std::hex << h;
    ASSERT_EQ(f32_to_f16(-mid), even | 0x8000u) << std::hex << h;
  }
}

TEST(DTypeTest, F16SubnormalsInfNan) {
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001u);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000u);  // tie to even zero
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001u);
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002u);  // tie to even 2
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000u);
  EXPECT_EQ(f32_to_f16(std::ldexp(2047.0f, -25)), 0x0400u);  // largest subnormal tie -> normal
  EXPECT_EQ(f32_to_f16(from_bits(0x00000001u)), 0x0000u);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000u);  // underflow keeps the sign
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000u);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000u)));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f32_to_f16(inf), 0x7c00u);
  EXPECT_EQ(f32_to_f16(-inf), 0xfc00u);
  EXPECT_EQ(f16_to_f32(0x7c00u), inf);
  EXPECT_EQ(f16_to_f32(0xfc00u), -inf);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00u)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01u)));
  EXPECT_TRUE(f16_is_nan(f32_to_f16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(f16_is_nan(f32_to_f16(from_bits(0x7f800001u))));
  EXPECT_TRUE(f16_is_nan(f32_to_f16(from_bits(0xffc00000u))));
}

TEST(DTypeTest, ToF32FromUnalignedBuffers) {
  const float want[3] = {1.5f, -2.0f, 0.25f};
  uint8_t buf[1 + 3 * 8];
  float got[3];

  for (int i = 0; i < 3; ++i) std::memcpy(buf + 1 + 4 * i, &want[i], 4);
  dtype_to_f32(DT_F32, buf + 1, got, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], want[i]);

  for (int i = 0; i < 3; ++i) {
    uint16_t h = f32_to_bf16(want[i]);
    std::memcpy(buf + 1 + 2 * i, &h, 2);
  }
  dtype_to_f32(DT_BF16, buf + 1, got, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], want[i]);

  for (int i = 0; i < 3; ++i) {
    uint16_t h = f32_to_f16(want[i]);
    std::memcpy(buf + 1 + 2 * i, &h, 2);
  }
  dtype_to_f32(DT_F16, buf + 1, got, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], want[i]);

  for (int i = 0; i < 3; ++i) {
    double d = want[i];
    std::memcpy(buf + 1 + 8 * i, &d, 8);
  }
  dtype_to_f32(DT_F64, buf + 1, got, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], want[i]);

  EXPECT_THROW(dtype_to_f32(DT_I64, buf, got, 1), MoeError);
}

}  // namespace
}  // namespace moe
