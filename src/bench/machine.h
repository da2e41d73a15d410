// The machine's limits, measured in the run that reports against them: DRAM read bandwidth (a
// multi-threaded streaming read over a buffer several times the last-level cache) and fp32 GEMM
// throughput (the engine's OpenBLAS sgemm); plus what the machine is (CPU, caches, memory, load). Timers: core/clock.h.
//
// Every measurement uses the current OpenMP / OpenBLAS thread counts (the caller sets them).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/clock.h"  // now_s(), which every benchmark times with

namespace moe {

struct MachineInfo {
  std::string cpu;         // /proc/cpuinfo "model name"
  int cpus = 0;            // online CPUs
  int threads = 0;         // OpenMP threads of this run
  int64_t llc_bytes = 0;   // last-level cache (largest cache of cpu0), 0 if unknown
  int64_t mem_total = 0;   // bytes (/proc/meminfo)
  int64_t mem_available = 0;
  double load1 = 0.0;      // /proc/loadavg at the time of the call
  std::string kernels;     // quant kernel target in use (quant/quant.h)
  std::string date;        // UTC, ISO 8601
};

MachineInfo machine_info();

// 1-minute load average now (0 if unreadable).
double load_average();

// MemAvailable of /proc/meminfo in bytes (0 if unreadable).
int64_t mem_available();

// How much CPU time went to other processes (and to other guests: steal) over an interval, to
// tell whether a measurement ran on an otherwise idle machine. From /proc/stat and this process's
// own CPU time.
struct CpuShare {
  double t0 = 0.0, busy0 = 0.0, steal0 = 0.0, self0 = 0.0;
};
CpuShare cpu_share_start();
struct CpuOthers {
  double others = 0.0;  // fraction of all CPUs' time used by other processes (0..1)
  double steal = 0.0;   // fraction stolen by the hypervisor
};
CpuOthers cpu_share_since(const CpuShare& s);

struct BandwidthResult {
  int64_t bytes = 0;   // buffer size
  int reps = 0;        // timed passes of each kind
  double best_gbps = 0.0;           // 1e9 bytes per second, best pass of either kind
  double median_gbps = 0.0;         // median of the better kind
  double best_plain_gbps = 0.0;     // without software prefetch
  double best_prefetch_gbps = 0.0;  // with it
  CpuOthers cpu;                    // other processes' share of the CPUs while measuring
};

// Streaming read: every thread sums its static share of a `bytes` buffer (64-bit words, 256-bit
// loads where the CPU has AVX2); the buffer is written once before timing, so it is resident.
// Passes alternate between plain loads and loads with a software prefetch 4 KiB ahead (which on
// some machines moves much more data per core than the hardware prefetchers alone); `reps` timed
// passes of each after one untimed pass. The limit is the best pass of either kind.
BandwidthResult measure_read_bandwidth(int64_t bytes, int reps);

// The default bandwidth buffer: max(1 GiB, 4 x LLC).
int64_t default_bandwidth_bytes(int64_t llc_bytes);

struct GemmResult {
  int n = 0;  // C (n, n) = A (n, n) B (n, n)
  int reps = 0;
  double best_gflops = 0.0;  // 2 n^3 / seconds / 1e9
};

// The engine's sgemm (op_sgemm of ops/ops.h: OpenBLAS, split over the OpenMP threads) on random
// n x n matrices: best of `reps` after one untimed call.
GemmResult measure_sgemm(int n, int reps);

struct TimeStats {
  int reps = 0;
  double median_s = 0.0, min_s = 0.0, mean_s = 0.0;
};

// Calls fn(i) for i = 0, 1, ... timing each call, until at least min_reps calls and min_time_s
// seconds in total, or max_reps calls. warmup calls come first, with i = 0 .. warmup-1, untimed;
// the timed calls continue the count.
TimeStats time_calls(const std::function<void(int)>& fn, int warmup, int min_reps, int max_reps,
                     double min_time_s);

// The machine and the run's conditions for a report: JSON (with the measured limits where given)
// and one Markdown paragraph. load_end: the load average when the run ended.
nlohmann::json machine_json(const MachineInfo& m, double load_end, const BandwidthResult* bw,
                            const GemmResult* gemm);
std::string machine_markdown(const MachineInfo& m, double load_end);
// "DRAM read 21.9 GB/s (...how it was measured...)", no final period.
std::string bandwidth_markdown(const BandwidthResult& bw);

// Human-readable sizes for reports: "1.50 GiB", "12.30 MiB", "4.0 KiB".
std::string human_bytes(int64_t b);

}  // namespace moe
