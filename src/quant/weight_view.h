// Views of weight matrices as the ops take them: fp32 rows, or raw rows (BF16, Q8_0, Q4_0) in
// a mapped checkpoint. Plain pointers; the model (model/weights.h) binds them, the ops read them.
#pragma once

#include <cstdint>

#include "quant/quant.h"

namespace moe {

// A weight matrix (rows, cols) kept raw in the mapped checkpoint: row r holds cols elements of
// `type` (BF16, Q8_0 or Q4_0) at data + r * stride. type QT_F32 means "not raw".
struct QWeight {
  QType type = QT_F32;
  const uint8_t* data = nullptr;
  int64_t stride = 0;  // bytes from one row to the next
};

// y = x W^T + b. w: (out, in) row-major fp32, or null when the matrix is raw (q); b: (out) or
// null. Run with linear_forward (ops/linear.h).
struct Linear {
  const float* w = nullptr;
  const float* b = nullptr;
  int out = 0, in = 0;
  QWeight q = {};
};

// One routed expert. gate, up: (F, D); down: (D, F). Biases (gpt-oss) may be null.
// A matrix is either fp32 (gate/up/down set) or raw (the pointer is null and gate_q/up_q/down_q
// describe it).
struct ExpertWeights {
  const float* gate = nullptr;
  const float* up = nullptr;
  const float* down = nullptr;
  const float* gate_b = nullptr;  // (F)
  const float* up_b = nullptr;    // (F)
  const float* down_b = nullptr;  // (D)
  QWeight gate_q = {}, up_q = {}, down_q = {};
};

// A dense SwiGLU MLP: down(silu(gate x) * up x).
struct MlpWeights {
  Linear gate, up, down;
};

}  // namespace moe
