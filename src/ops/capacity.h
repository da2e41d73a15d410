// Expert capacity and token dropping: the one implementation, used by the router (training with
// --capacity-factor), the dispatch plan and the routing analysis (`moe inspect`).
//
// Convention (Megatron): capacity C = ceil(N*K/E * capacity_factor) assignments per expert;
// capacity_factor <= 0 is dropless. Over capacity, an expert keeps its highest-weight assignments;
// ties go to the lower token, then the lower assignment index; a NaN weight ranks below every
// number. A dropped assignment contributes nothing and the token's residual carries on.
//
// Legend: N tokens, E experts, K experts per token, A assignments.
#pragma once

#include <cstdint>

namespace moe {

// Per-expert capacity for N tokens routed to K of E experts each; 0 when capacity_factor <= 0.
int64_t capacity_for(int64_t N, int K, int E, double capacity_factor);

// Marks which of A assignments (token tok[a], expert expert[a] in [0, E), weight w[a]) fit in
// `cap` per expert: kept[a] = 1 or 0. dropped_per_expert (E) receives the drops per expert, or
// may be null. work: (A + 2E + 1) int32 scratch. Returns the number dropped. cap <= 0 keeps all.
int64_t capacity_apply(const int32_t* tok, const int32_t* expert, const float* w, int64_t A, int E,
                       int64_t cap, char* kept, int64_t* dropped_per_expert, int32_t* work);

}  // namespace moe
