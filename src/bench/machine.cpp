#include "bench/machine.h"

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "ops/ops.h"
#include "quant/quant.h"

namespace moe {

namespace {

std::string read_first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// "307200K", "2048K", "32M" -> bytes.
int64_t parse_cache_size(const std::string& s) {
  if (s.empty()) return 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (v <= 0) return 0;
  int64_t mul = 1;
  if (*end == 'K') mul = 1024;
  else if (*end == 'M') mul = 1024 * 1024;
  else if (*end == 'G') mul = int64_t{1} << 30;
  return static_cast<int64_t>(v) * mul;
}

int64_t meminfo_field(const char* field) {
  std::ifstream f("/proc/meminfo");
  std::string key;
  long long kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == field) return static_cast<int64_t>(kb) * 1024;
  return 0;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

namespace {

// Busy and steal seconds of all CPUs since boot (/proc/stat), and this process's CPU seconds.
void cpu_times(double* busy, double* steal, double* self) {
  std::istringstream in(read_first_line("/proc/stat"));
  std::string cpu;
  double v[8] = {};
  in >> cpu;
  for (double& x : v) in >> x;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  // user nice system idle iowait irq softirq steal
  *busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
  *steal = v[7] / hz;
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  *self = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
          1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

CpuShare cpu_share_start() {
  CpuShare s;
  s.t0 = now_s();
  cpu_times(&s.busy0, &s.steal0, &s.self0);
  return s;
}

CpuOthers cpu_share_since(const CpuShare& s) {
  double busy, steal, self;
  cpu_times(&busy, &steal, &self);
  const double cap = (now_s() - s.t0) * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
  CpuOthers o;
  if (cap <= 0.0) return o;
  o.others = std::clamp(((busy - s.busy0) - (self - s.self0)) / cap, 0.0, 1.0);
  o.steal = std::clamp((steal - s.steal0) / cap, 0.0, 1.0);
  return o;
}

double load_average() {
  std::istringstream in(read_first_line("/proc/loadavg"));
  double l = 0.0;
  in >> l;
  return l;
}

int64_t mem_available() { return meminfo_field("MemAvailable:"); }

MachineInfo machine_info() {
  MachineInfo m;
  {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("model name", 0) != 0) continue;
      const size_t c = line.find(':');
      if (c != std::string::npos) m.cpu = line.substr(line.find_first_not_of(' ', c + 1));
      break;
    }
  }
  m.cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  m.threads = omp_get_max_threads();
  int best_level = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = read_first_line(dir + "level");
    if (level.empty()) continue;
    const std::string type = read_first_line(dir + "type");
    if (type == "Instruction") continue;
    const int lv = std::atoi(level.c_str());
    if (lv < best_level) continue;
    best_level = lv;
    m.llc_bytes = parse_cache_size(read_first_line(dir + "size"));
  }
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (m.llc_bytes <= 0) m.llc_bytes = std::max<long>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
  m.mem_total = meminfo_field("MemTotal:");
  m.mem_available = mem_available();
  m.load1 = load_average();
  m.kernels = qkernels().name;
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  m.date = buf;
  return m;
}

namespace {

constexpr int64_t kPrefetchWords = 512;  // 4 KiB ahead, as the quant kernels (quant_x86.cpp)

// Sum of the 64-bit words p[b, e): 256-bit loads where the CPU has AVX2 (target_clones picks the
// version when the program loads), with a software prefetch 4 KiB ahead if pf.
__attribute__((target_clones("avx2", "default"))) uint64_t stream_sum(const uint64_t* p, int64_t b,
                                                                      int64_t e, bool pf) {
  typedef uint64_t v4 __attribute__((vector_size(32)));
  v4 a0 = {}, a1 = {};
  int64_t i = b;
  for (; i + 8 <= e; i += 8) {
    if (pf) __builtin_prefetch(p + i + kPrefetchWords);
    v4 x, y;
    std::memcpy(&x, p + i, 32);
    std::memcpy(&y, p + i + 4, 32);
    a0 += x;
    a1 += y;
  }
  uint64_t s = 0;
  for (int k = 0; k < 4; ++k) s += a0[k] + a1[k];
  for (; i < e; ++i) s += p[i];
  return s;
}

}  // namespace

int64_t default_bandwidth_bytes(int64_t llc_bytes) {
  return std::max<int64_t>(int64_t{1} << 30, 4 * llc_bytes);
}

BandwidthResult measure_read_bandwidth(int64_t bytes, int reps) {
  MOE_CHECK(bytes >= 4096 && reps >= 1);
  const int64_t n = bytes / 8;  // 64-bit words
  std::unique_ptr<uint64_t[], FreeDeleter> buf(
      static_cast<uint64_t*>(std::aligned_alloc(4096, static_cast<size_t>((n * 8 + 4095) / 4096 * 4096))));
  if (!buf) fail("bandwidth probe: cannot allocate %s", human_bytes(bytes).c_str());
  uint64_t* p = buf.get();
  // Written by the threads that read it (first touch), in the same static split.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ULL;
  volatile uint64_t sink = 0;
  std::vector<double> gbps[2];  // plain, with software prefetch
  const CpuShare share = cpu_share_start();
  for (int r = 0; r <= 2 * reps; ++r) {
    const bool pf = r % 2 == 0;
    const double t0 = now_s();
    uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const int nt = omp_get_num_threads(), it = omp_get_thread_num();
      const int64_t chunk = (n / nt) & ~int64_t{7};
      const int64_t b = it * chunk, e = it == nt - 1 ? n : b + chunk;
      total += stream_sum(p, b, e, pf);
    }
    const double dt = now_s() - t0;
    sink = sink + total;
    if (r > 0) gbps[pf].push_back(static_cast<double>(n * 8) / dt / 1e9);  // pass 0 is untimed
  }
  BandwidthResult res;
  res.cpu = cpu_share_since(share);
  res.bytes = n * 8;
  res.reps = reps;
  res.best_plain_gbps = *std::max_element(gbps[0].begin(), gbps[0].end());
  res.best_prefetch_gbps = *std::max_element(gbps[1].begin(), gbps[1].end());
  res.best_gbps = std::max(res.best_plain_gbps, res.best_prefetch_gbps);
  res.median_gbps = median_of(res.best_prefetch_gbps >= res.best_plain_gbps ? gbps[1] : gbps[0]);
  return res;
}

GemmResult measure_sgemm(int n, int reps) {
  MOE_CHECK(n > 0 && reps >= 1);
  const size_t nn = static_cast<size_t>(n) * n;
  std::vector<float> a(nn), b(nn), c(nn);
  for (size_t i = 0; i < nn; ++i) {
    a[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    b[i] = static_cast<float>((i * 40503u) % 1000) * 1e-3f - 0.5f;
  }
  double best = 0.0;
  for (int r = 0; r <= reps; ++r) {
    const double t0 = now_s();
    op_sgemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double dt = now_s() - t0;
    if (r > 0) best = std::max(best, 2.0 * n * static_cast<double>(n) * n / dt / 1e9);
  }
  GemmResult g;
  g.n = n;
  g.reps = reps;
  g.best_gflops = best;
  return g;
}

TimeStats time_calls(const std::function<void(int)>& fn, int warmup, int min_reps, int max_reps,
                     double min_time_s) {
  int i = 0;
  for (; i < warmup; ++i) fn(i);
  std::vector<double> t;
  double total = 0.0;
  while (static_cast<int>(t.size()) < max_reps &&
         (static_cast<int>(t.size()) < min_reps || total < min_time_s)) {
    const double t0 = now_s();
    fn(i++);
    const double dt = now_s() - t0;
    t.push_back(dt);
    total += dt;
  }
  TimeStats s;
  s.reps = static_cast<int>(t.size());
  if (t.empty()) return s;
  s.median_s = median_of(t);
  s.min_s = *std::min_element(t.begin(), t.end());
  s.mean_s = total / static_cast<double>(t.size());
  return s;
}

nlohmann::json machine_json(const MachineInfo& m, double load_end, const BandwidthResult* bw,
                            const GemmResult* gemm) {
  nlohmann::json j = {{"cpu", m.cpu},
                      {"cpus", m.cpus},
                      {"threads", m.threads},
                      {"llc_bytes", m.llc_bytes},
                      {"mem_total", m.mem_total},
                      {"mem_available", m.mem_available},
                      {"kernels", m.kernels},
                      {"date", m.date},
                      {"load_start", m.load1},
                      {"load_end", load_end}};
  if (bw) {
    j["dram_read_gbps"] = bw->best_gbps;
    j["dram_read_gbps_median"] = bw->median_gbps;
    j["dram_read_gbps_plain"] = bw->best_plain_gbps;
    j["dram_read_gbps_prefetch"] = bw->best_prefetch_gbps;
    j["dram_probe_other_cpu"] = bw->cpu.others;
    j["dram_probe_bytes"] = bw->bytes;
    j["dram_probe_reps"] = bw->reps;
  }
  if (gemm) {
    j["sgemm_gflops"] = gemm->best_gflops;
    j["sgemm_n"] = gemm->n;
  }
  return j;
}

std::string machine_markdown(const MachineInfo& m, double load_end) {
  return strfmt("Machine: %s, %d CPUs, %d threads, LLC %s, memory %s (%s available), quant "
                "kernels %s. %s, load average %.2f at the start, %.2f at the end.\n\n",
                m.cpu.c_str(), m.cpus, m.threads, human_bytes(m.llc_bytes).c_str(),
                human_bytes(m.mem_total).c_str(), human_bytes(m.mem_available).c_str(),
                m.kernels.c_str(), m.date.c_str(), m.load1, load_end);
}

std::string bandwidth_markdown(const BandwidthResult& bw) {
  return strfmt("DRAM read %.1f GB/s (best of %d plain and %d prefetching streaming passes over %s: "
                "plain %.1f, with prefetch %.1f; median %.1f; other processes used %.0f%% of the "
                "CPUs meanwhile)",
                bw.best_gbps, bw.reps, bw.reps, human_bytes(bw.bytes).c_str(), bw.best_plain_gbps,
                bw.best_prefetch_gbps, bw.median_gbps, 100.0 * bw.cpu.others);
}

std::string human_bytes(int64_t b) {
  const double v = static_cast<double>(b);
  if (v >= 1024.0 * 1024 * 1024) return strfmt("%.2f GiB", v / (1024.0 * 1024 * 1024));
  if (v >= 1024.0 * 1024) return strfmt("%.2f MiB", v / (1024.0 * 1024));
  return strfmt("%.1f KiB", v / 1024.0);
}

}  // namespace moe
