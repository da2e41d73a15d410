#include "moe/expert_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "ops/backend.h"

namespace moe {

namespace {

constexpr int64_t kPage = 4096;

int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

// The three raw matrices of an expert, in slot order.
const QWeight* expert_q(const ExpertWeights& w, int i) {
  return i == 0 ? &w.gate_q : i == 1 ? &w.up_q : &w.down_q;
}

// The archive file whose map holds [p, p + n), or -1.
int file_of(const Model& m, const uint8_t* p, int64_t n) {
  for (size_t f = 0; f < m.archive.files.size(); ++f) {
    const MappedFile& mf = *m.archive.files[f];
    if (mf.data && p >= mf.data && p + n <= mf.data + mf.size) return static_cast<int>(f);
  }
  return -1;
}

// Fills c->ranges and c->cacheable from the model's raw experts; returns how many are cacheable.
int64_t find_ranges(ExpertCache* c, const Model& m) {
  const ExpertFfnSpec f = expert_ffn_spec(m.cfg);
  const int64_t rows[3] = {f.ffn, f.ffn, f.hidden}, cols[3] = {f.hidden, f.hidden, f.ffn};
  c->ranges.assign(static_cast<size_t>(c->L) * c->E * 3, ExpertRange());
  c->cacheable.assign(static_cast<size_t>(c->L) * c->E, 0);
  int64_t n = 0;
  for (int l = 0; l < c->L; ++l) {
    const std::vector<ExpertWeights>& ex = m.layers[l].experts;
    for (int e = 0; e < static_cast<int>(ex.size()) && e < c->E; ++e) {
      ExpertRange r[3];
      bool ok = !ex[e].gate && !ex[e].up && !ex[e].down;
      for (int i = 0; i < 3 && ok; ++i) {
        const QWeight* q = expert_q(ex[e], i);
        if (q->type == QT_F32 || !q->data) {
          ok = false;
          break;
        }
        r[i].len = (rows[i] - 1) * q->stride + qtype_row_bytes(q->type, cols[i]);
        r[i].file = file_of(m, q->data, r[i].len);
        ok = r[i].file >= 0;
        if (ok) r[i].off = q->data - m.archive.files[r[i].file]->data;
      }
      if (!ok) continue;
      std::copy(r, r + 3, c->ranges.begin() + (static_cast<int64_t>(l) * c->E + e) * 3);
      c->cacheable[static_cast<size_t>(l) * c->E + e] = 1;
      for (int i = 0; i < 3; ++i) c->region[i] = std::max(c->region[i], round_up(r[i].len + 64, kPage));
      ++n;
    }
  }
  return n;
}

// Opens the files that hold cacheable experts (no readahead on these descriptors), and tells the
// map not to read around faults in the expert ranges.
void open_files(ExpertCache* c, const Model& m) {
  c->fds.assign(m.archive.files.size(), -1);
  for (size_t k = 0; k < c->cacheable.size(); ++k) {
    if (!c->cacheable[k]) continue;
    for (int i = 0; i < 3; ++i) {
      const ExpertRange& r = c->ranges[k * 3 + i];
      const MappedFile& mf = *m.archive.files[r.file];
      if (c->fds[r.file] < 0) {
        const int fd = ::open(mf.path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("expert cache: cannot open %s: %s", mf.path.c_str(), std::strerror(errno));
        posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
        c->fds[r.file] = fd;
      }
      const uintptr_t a = reinterpret_cast<uintptr_t>(mf.data + r.off);
      const uintptr_t b = a + static_cast<uintptr_t>(r.len);
      const uintptr_t a0 = a / kPage * kPage, b0 = round_up(static_cast<int64_t>(b), kPage);
      madvise(reinterpret_cast<void*>(a0), b0 - a0, MADV_RANDOM);  // advice only: errors ignored
    }
  }
}

void allocate_arena(ExpertCache* c) {
  c->arena_bytes = static_cast<size_t>(c->n_slots * c->slot_bytes);
  void* p = mmap(nullptr, c->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    fail("expert cache: cannot allocate %.2f GiB: %s", c->arena_bytes / 1073741824.0,
         std::strerror(errno));
  c->arena = static_cast<uint8_t*>(p);
  if (!c->opt.lock) return;
  if (mlock(c->arena, c->arena_bytes) == 0) {
    c->locked = true;
    return;
  }
  const int err = errno;
  struct rlimit rl = {};
  getrlimit(RLIMIT_MEMLOCK, &rl);
  std::fprintf(stderr,
               "warning: expert cache: mlock of %.2f GiB refused (%s; RLIMIT_MEMLOCK %lld KiB): "
               "the cache works but may be swapped out; raise it with `ulimit -l`\n",
               c->arena_bytes / 1073741824.0, std::strerror(err),
               rl.rlim_cur == RLIM_INFINITY ? -1LL : static_cast<long long>(rl.rlim_cur / 1024));
}

const ExpertRange* ranges_of(const ExpertCache& c, int64_t key) { return &c.ranges[key * 3]; }

// Asks storage for the key's three ranges (page cache, asynchronously).
void request(const ExpertCache& c, int64_t key) {
  const ExpertRange* r = ranges_of(c, key);
  for (int i = 0; i < 3; ++i) posix_fadvise(c.fds[r[i].file], r[i].off, r[i].len, POSIX_FADV_WILLNEED);
}

// Where matrix i of a slot starts: the same offset modulo 64 as in the file.
uint8_t* slot_matrix(const ExpertCache& c, int32_t slot, int i, const ExpertRange& r) {
  int64_t base = static_cast<int64_t>(slot) * c.slot_bytes;
  for (int j = 0; j < i; ++j) base += c.region[j];
  return c.arena + base + r.off % 64;
}

void read_exact(int fd, uint8_t* dst, int64_t off, int64_t len) {
  while (len > 0) {
    const ssize_t got = ::pread(fd, dst, static_cast<size_t>(len), off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      fail("expert cache: reading %lld bytes at offset %lld: %s", static_cast<long long>(len),
           static_cast<long long>(off), got < 0 ? std::strerror(errno) : "unexpected end of file");
    dst += got;
    off += got;
    len -= got;
  }
}

// Reads the key's matrices into the slot, then drops them from the page cache.
void fill_slot(ExpertCache* c, int64_t key, int32_t slot) {
  const ExpertRange* r = ranges_of(*c, key);
  for (int i = 0; i < 3; ++i) {
    read_exact(c->fds[r[i].file], slot_matrix(*c, slot, i, r[i]), r[i].off, r[i].len);
    posix_fadvise(c->fds[r[i].file], r[i].off, r[i].len, POSIX_FADV_DONTNEED);
    c->stats.read_bytes += r[i].len;
  }
}

ExpertWeights slot_view(const ExpertCache& c, const ExpertWeights& w, int64_t key, int32_t slot) {
  ExpertWeights v = w;
  const ExpertRange* r = ranges_of(c, key);
  v.gate_q.data = slot_matrix(c, slot, 0, r[0]);
  v.up_q.data = slot_matrix(c, slot, 1, r[1]);
  v.down_q.data = slot_matrix(c, slot, 2, r[2]);
  return v;
}

// Scores the pending prediction of `layer` against the call's routing idx (N, K).
void score_prediction(ExpertCache* c, int layer, const int32_t* idx, int N, int K) {
  const int32_t* pred = expert_cache_prediction(*c, layer);
  if (!pred) return;
  const int b = layer % 2;
  c->pred_layer[b] = -1;
  if (c->pred_T[b] != N || K != c->K || !idx) return;
  c->stats.pred_tokens += N;
  for (int t = 0; t < N; ++t) {
    const int32_t* a = idx + static_cast<int64_t>(t) * K;
    const int32_t* p = pred + static_cast<int64_t>(t) * K;
    for (int j = 0; j < K; ++j) {
      if (a[j] < 0) continue;
      ++c->stats.pred_total;
      c->stats.pred_hits += std::find(p, p + K, a[j]) != p + K;
    }
  }
}

}  // namespace

ExpertCache::~ExpertCache() {
  if (arena) munmap(arena, arena_bytes);
  for (int fd : fds)
    if (fd >= 0) ::close(fd);
}

void expert_cache_attach(Model* m, const ExpertCacheOptions& o) {
  if (o.gib <= 0.0) return;
  if (!(o.half_life > 0.0)) fail("expert cache: the half-life must be > 0 tokens");
  if (m->cfg.n_experts <= 0 || m->cfg.top_k <= 0) fail("expert cache: %s has no routed experts",
                                                      m->archive.origin.c_str());
  auto c = std::make_shared<ExpertCache>();
  c->opt = o;
  c->L = static_cast<int>(m->layers.size());
  c->E = m->cfg.n_experts;
  c->K = m->cfg.top_k;
  c->D = m->cfg.hidden;
  const int64_t n = find_ranges(c.get(), *m);
  if (n == 0)
    fail("expert cache: %s has no raw routed experts in its files (fp32 or converted experts are "
         "not cached)", m->archive.origin.c_str());
  c->slot_bytes = c->region[0] + c->region[1] + c->region[2];
  const double bytes = o.gib * 1073741824.0;
  c->n_slots = std::min<int64_t>(static_cast<int64_t>(bytes / c->slot_bytes), n);
  if (c->n_slots <= 0)
    fail("expert cache: %.3f GiB holds no expert (one takes %.2f MiB)", o.gib,
         c->slot_bytes / 1048576.0);
  open_files(c.get(), *m);
  allocate_arena(c.get());
  lfu_init(&c->lfu, static_cast<int64_t>(c->L) * c->E, c->n_slots, o.half_life);
  c->fill.assign(c->E, 0);
  c->pmark.assign(c->E, 0);
  m->expert_cache = c;
}

void expert_cache_begin_forward(ExpertCache* c, int T) {
  lfu_decay(&c->lfu, T);
  c->stats.tokens += T;
}

const int32_t* expert_cache_prediction(const ExpertCache& c, int layer) {
  const int b = layer % 2;
  if (layer < 0 || c.pred_layer[b] != layer) return nullptr;
  return c.pidx.data() + static_cast<int64_t>(b) * c.pred_T_max * c.K;
}

int64_t expert_cache_expert_bytes(const ExpertCache& c, int layer, int e) {
  const ExpertRange* r = ranges_of(c, static_cast<int64_t>(layer) * c.E + e);
  return r[0].len + r[1].len + r[2].len;
}

void expert_cache_bind(ExpertCache* c, int layer, const ExpertWeights* experts,
                       const ExpertSegments& seg, ExpertWeights* xw, const int32_t* idx, int N,
                       int K) {
  MOE_CHECK(layer >= 0 && layer < c->L);
  std::copy(experts, experts + c->E, xw);
  score_prediction(c, layer, idx, N, K);
  lfu_begin_call(&c->lfu);
  const int64_t k0 = static_cast<int64_t>(layer) * c->E;
  auto used = [&](int i) { return seg.off[i + 1] > seg.off[i] && c->cacheable[k0 + seg.e0 + i]; };
  for (int i = 0; i < seg.n; ++i) {
    if (seg.off[i + 1] <= seg.off[i]) continue;
    if (!c->cacheable[k0 + seg.e0 + i]) ++c->stats.uncacheable;
    else lfu_touch(&c->lfu, k0 + seg.e0 + i, seg.off[i + 1] - seg.off[i]);
  }
  // Hits and admissions first, then every miss requested at once, then the admitted ones read.
  for (int i = 0; i < seg.n; ++i) {
    if (!used(i)) continue;
    const int e = seg.e0 + i;
    const int64_t key = k0 + e;
    ++c->stats.lookups;
    int32_t slot = lfu_lookup(&c->lfu, key);
    if (slot >= 0) {
      ++c->stats.hits;
      xw[e] = slot_view(*c, experts[e], key, slot);
      continue;
    }
    c->stats.miss_bytes += expert_cache_expert_bytes(*c, layer, e);
    int64_t evicted = -1;
    slot = lfu_admit(&c->lfu, key, &evicted);
    c->stats.evictions += evicted >= 0;
    request(*c, key);
    if (slot < 0) {
      ++c->stats.from_map;
      continue;
    }
    ++c->stats.admitted;
    xw[e] = slot_view(*c, experts[e], key, slot);
    c->fill[c->n_fill++] = key;
  }
  for (int i = 0; i < c->n_fill; ++i) fill_slot(c, c->fill[i], c->lfu.slot_of[c->fill[i]]);
  c->n_fill = 0;
}

void expert_cache_predict(ExpertCache* c, const Model& m, int layer, const float* h, int T,
                          const int32_t* ids, int64_t pos) {
  const ModelConfig& cfg = m.cfg;
  const RouterSpec& spec = cfg.router;
  MOE_CHECK(layer >= 0 && layer < c->L && T > 0);
  if (spec.kind == ROUTER_EXPERT_CHOICE || (spec.kind == ROUTER_HASH && !ids)) return;
  if (T > c->pred_T_max) {  // grows to the largest call once, then reused
    c->pred_T_max = T;
    c->pxn.assign(static_cast<size_t>(T) * c->D, 0.0f);
    c->plogits.assign(static_cast<size_t>(T) * c->E, 0.0f);
    c->pidx.assign(2 * static_cast<size_t>(T) * c->K, -1);
    c->pred_layer[0] = c->pred_layer[1] = -1;  // their rows moved
    routing_init(&c->proute, T, c->E, c->K);
    linear_scratch_init(&c->plin, c->D);
  }
  const Backend& be = backend();
  const LayerWeights& lw = m.layers[layer];
  const bool learned = spec.kind != ROUTER_HASH && spec.kind != ROUTER_RANDOM;
  be.rmsnorm(c->pxn.data(), h, lw.ffn_norm, T, c->D, cfg.rms_eps);
  if (learned) be.linear(c->plogits.data(), c->pxn.data(), lw.router, T, &c->plin);
  be.route(&c->proute, spec, learned ? c->plogits.data() : nullptr, lw.e_bias, nullptr, ids, T,
           0.0f, router_layer_seed(0, layer), false, pos);
  const int b = layer % 2;
  c->pred_layer[b] = -1;
  if (c->proute.A != T * c->K) return;
  int32_t* pred = c->pidx.data() + static_cast<int64_t>(b) * c->pred_T_max * c->K;
  std::copy(c->proute.expert.begin(), c->proute.expert.begin() + c->proute.A, pred);
  c->pred_layer[b] = layer;
  c->pred_T[b] = T;
  if (!c->opt.prefetch) return;
  const int64_t k0 = static_cast<int64_t>(layer) * c->E;
  std::fill(c->pmark.begin(), c->pmark.end(), 0);
  for (int a = 0; a < c->proute.A; ++a) {
    const int e = pred[a];
    if (e < 0 || e >= c->E || c->pmark[e] || !c->cacheable[k0 + e]) continue;
    c->pmark[e] = 1;
    if (c->lfu.slot_of[k0 + e] >= 0) continue;
    request(*c, k0 + e);
    ++c->stats.prefetch_experts;
    c->stats.prefetch_bytes += expert_cache_expert_bytes(*c, layer, e);
  }
}

std::string expert_cache_summary(const ExpertCache& c) {
  const ExpertCacheStats& s = c.stats;
  const double tk = static_cast<double>(std::max<int64_t>(s.tokens, 1));
  return strfmt("expert cache: %.2f GiB, %lld of %lld experts (%s); hit rate %.1f%% of %lld uses, "
                "%lld admitted, %lld from the map, %lld evictions; per token: miss expert bytes "
                "%.1f MB, read into the cache %.1f MB, prefetch requests %.1f MB; prediction "
                "accuracy %.1f%% (%lld tokens)",
                c.arena_bytes / 1073741824.0, static_cast<long long>(c.n_slots),
                static_cast<long long>(std::count(c.cacheable.begin(), c.cacheable.end(), 1)),
                c.locked ? "locked" : "not locked",
                s.lookups ? 100.0 * s.hits / s.lookups : 0.0, static_cast<long long>(s.lookups),
                static_cast<long long>(s.admitted), static_cast<long long>(s.from_map),
                static_cast<long long>(s.evictions), s.miss_bytes / 1e6 / tk,
                s.read_bytes / 1e6 / tk, s.prefetch_bytes / 1e6 / tk,
                s.pred_total ? 100.0 * s.pred_hits / s.pred_total : 0.0,
                static_cast<long long>(s.pred_tokens));
}

}  // namespace moe
