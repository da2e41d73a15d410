#include "golden_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace moe_test {

namespace {

std::vector<int32_t> read_ids(const moe::StTensor& t) {
  std::vector<int32_t> out(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t v;
    std::memcpy(&v, t.data + 8 * i, 8);
    out[i] = static_cast<int32_t>(v);
  }
  return out;
}

}  // namespace

Golden load_golden(const std::string& dir) {
  moe::StArchive ar;
  moe::st_open_file(&ar, dir + "/golden.safetensors");
  Golden g;
  g.ids = read_ids(ar.get("input_ids"));
  g.greedy = read_ids(ar.get("greedy_ids"));
  const moe::StTensor& lg = ar.get("logits");
  g.T = static_cast<int>(lg.shape[1]);
  g.V = static_cast<int>(lg.shape[2]);
  g.logits.resize(lg.numel());
  moe::dtype_to_f32(lg.dtype, lg.data, g.logits.data(), g.logits.size());
  for (float v : g.logits) g.max_abs = std::max(g.max_abs, std::fabs(v));
  return g;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace moe_test
