// Choosing OpenBLAS's kernels on CPUs it does not recognise.
//
// OpenBLAS (DYNAMIC_ARCH builds such as Debian's) picks its kernels from the CPU's family and model
// numbers. On a model it does not know (Debian 12's 0.3.21 does not know Sapphire or Emerald
// Rapids, nor many virtual CPUs) it falls back to its oldest x86-64 kernels (Prescott, SSE3),
// several times slower than the AVX2 / AVX-512 ones the CPU can run. OpenBLAS reads
// OPENBLAS_CORETYPE only when it loads, so the fix is to set it and start the process again.
#pragma once

namespace moe {

// The core type to ask OpenBLAS for, or null when its own choice is fine (it recognised the CPU,
// the CPU lacks AVX2, or it is not x86-64): "SkylakeX" with AVX-512 F/BW/VL/DQ, else "Haswell"
// with AVX2 + FMA, and only when the running library chose a pre-AVX2 core.
const char* blas_coretype_override();

}  // namespace moe
