#include "ops/blas_env.h"

#include <cblas.h>

#include <cstring>

namespace moe {

const char* blas_coretype_override() {
#if defined(__x86_64__)
  const char* core = openblas_get_corename();
  if (!core) return nullptr;
  static const char* const kOld[] = {"Prescott", "Core2",   "Penryn",  "Dunnington",
                                     "Nehalem",  "Sandybridge", "Atom", "Nano",
                                     "Barcelona", "Opteron", "Opteron_SSE3", "Bobcat"};
  bool old = false;
  for (const char* k : kOld) old |= std::strcmp(core, k) == 0;
  if (!old) return nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

}  // namespace moe
