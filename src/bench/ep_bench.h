// `moe bench ep`: one MoE layer of a model at its real shapes, expert-parallel over the ranks of
// the run (under mpirun), each rank holding its block of experts (random weights of one type) and
// its own T tokens (data-parallel, as in training).
//
// Per token count T, in one run, interleaved call by call:
//  - the layer: moe_layer_forward, median time over the ranks' slowest;
//  - its all-to-all time: the seconds the dispatcher spends in the count and row exchanges
//    (dispatch and combine), median, on the rank that spent the least in them (the others also
//    wait there for the slowest rank's experts) and on the one that spent the most;
//  - a plain MPI_Alltoallv of the same byte counts per rank pair, twice (dispatch and combine),
//    the way the OSU micro-benchmarks time it: the baseline the dispatcher's exchanges are set
//    against;
//  - the grouped expert FFN alone on the same rows (this rank's experts), median.
// Overlap: the layer posts the row dispatch (MPI_Ialltoallv) and runs the shared expert before
// waiting; the share hidden is 1 - (time waited) / (a plain exchange of the same sizes).
// Bytes: the rows this rank sent to other ranks per token in the dispatch (the combine sends the
// same back), against the formula for uniform routing, K (P - 1) / P rows of D floats per token.
//
// Legend: P ranks, T tokens per rank, D width, E experts, K top-k.
#pragma once

#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/config.h"
#include "quant/quant.h"

namespace moe {

struct EpBenchOptions {
  QType type = QT_Q4_0;
  std::vector<int> tokens = {1, 8, 64, 512};  // per rank
  uint64_t seed = 1;
  int reps = 20;          // timed calls per case (after 3 untimed)
};

struct EpBenchCase {
  int tokens = 0;                      // per rank
  double layer_s = 0.0;                // median of the slowest rank's layer call
  double a2a_s = 0.0;                  // median, exchanges inside the layer, least-waiting rank
  double a2a_max_s = 0.0;              // the same on the rank that spent the most in them
  double plain_s = 0.0;                // median of two plain alltoallv of the same sizes
  double experts_s = 0.0;              // median of the slowest rank's grouped FFN
  double wait_s = 0.0;                 // median of the slowest rank's wait for the posted rows
  double plain_dispatch_s = 0.0;       // median of the plain exchange of the dispatch's sizes
  double hidden = 0.0;                 // 1 - wait / plain dispatch: the share of it overlapped
  double sent_bytes_per_token = 0.0;   // dispatch, mean over ranks, rows to other ranks
  double formula_bytes_per_token = 0.0;
  int64_t max_rows = 0, mean_rows = 0; // rows received for experts: slowest rank and mean
};

struct EpBenchResult {
  std::string model;
  QType type = QT_F32;
  int P = 1, D = 0, F = 0, E = 0, K = 0, S = 0;
  std::vector<EpBenchCase> cases;
};

EpBenchResult ep_bench_run(const ModelConfig& c, const std::string& model, Comm& comm,
                           const EpBenchOptions& o);
std::string ep_bench_markdown(const EpBenchResult& r);
std::string ep_bench_json(const EpBenchResult& r);

}  // namespace moe
