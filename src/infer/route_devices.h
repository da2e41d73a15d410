// Device-limited routing at inference (DeepSeek-V2's top-M devices): each token's experts come
// from at most M devices. Under mpirun the devices are the D ranks of the expert-parallel group
// (each holds a contiguous block of E/D experts, dist/placement.h); in one process, D groups of
// experts stand for them, so one process reproduces a D-rank run. Routed as group-limited routing
// with one group per device: the device score is the highest expert score on it (the sum of the
// two highest for sigmoid scores, as DeepSeek-V3 and `moe train --route-devices` do).
#pragma once

#include "model/config.h"

namespace moe {

// Applies --route-devices M (0: off, nothing changes) with --devices D (0: the ranks under
// mpirun) to a loaded model's router. Throws MoeError naming the flag when the model cannot be
// limited that way: no routed experts, a router that is not token choice, groups of its own
// (n_group > 1), D not dividing the experts, M > D, or M devices holding fewer than K experts.
void infer_route_devices(ModelConfig* c, int M, int D);

}  // namespace moe
