// The fuzz build's stand-in for src/quant/quant_x86.cpp, which clang-16 cannot compile
// (__builtin_cpu_supports("f16c") is GCC-only): no SIMD target, so quantized tensors run the
// scalar kernels. The parsers under test do not depend on the kernel target.
#include "quant/quant.h"

namespace moe {
bool quant_x86_kernels(QTarget, QKernels*) { return false; }
}  // namespace moe
