// The BPE model: Rust's BPE::merge_word + Word::merge_all (a min-heap of candidate merges keyed
// by (rank, position) over a linked list of symbols), byte fallback, unk fusing, ignore_merges,
// and a sharded, mutex-guarded cache of words shorter than 256 bytes.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {

struct TokBpeCache {
  static constexpr size_t kShards = 16;
  static constexpr size_t kShardCapacity = 1024;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> map;
  };
  Shard shards[kShards];
};

namespace tok {

namespace {

constexpr size_t kMaxCachedLen = 256;  // Rust's MAX_LENGTH

struct Symbol {
  int32_t c;
  int32_t prev, next;
  uint32_t len;
};

struct Merge {
  uint32_t rank;
  uint32_t pos;
  int32_t new_id;
};

// Heap order: the smallest rank first, then the leftmost position.
bool merge_after(const Merge& a, const Merge& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

struct Scratch {
  std::vector<Symbol> symbols;
  std::vector<Merge> heap;
  std::string buf;
};

void add_symbol(std::vector<Symbol>* w, int32_t c, uint32_t len) {
  int32_t n = static_cast<int32_t>(w->size());
  if (n > 0) w->back().next = n;
  w->push_back({c, n - 1, -1, len});
}

void push_merge(std::vector<Merge>* heap, Merge m) {
  heap->push_back(m);
  std::push_heap(heap->begin(), heap->end(), merge_after);
}

void merge_all(const TokPairMap& merges, std::vector<Symbol>& sym, std::vector<Merge>& heap) {
  heap.clear();
  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    const TokPairMap::Slot* m = merges.get(sym[i].c, sym[i + 1].c);
    if (m) heap.push_back({m->rank, static_cast<uint32_t>(i), m->new_id});
  }
  std::make_heap(heap.begin(), heap.end(), merge_after);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), merge_after);
    Merge top = heap.back();
    heap.pop_back();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    size_t next_pos = static_cast<size_t>(cur.next);
    Symbol right = sym[next_pos];
    const TokPairMap::Slot* m = merges.get(cur.c, right.c);
    if (!m || m->new_id != top.new_id) continue;  // an expired entry
    cur.c = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    sym[next_pos].len = 0;
    if (right.next > -1 && static_cast<size_t>(right.next) < sym.size())
      sym[right.next].prev = static_cast<int32_t>(top.pos);
    if (cur.prev >= 0) {
      const TokPairMap::Slot* pm = merges.get(sym[cur.prev].c, cur.c);
      if (pm) push_merge(&heap, {pm->rank, static_cast<uint32_t>(cur.prev), pm->new_id});
    }
    if (cur.next >= 0 && static_cast<size_t>(cur.next) < sym.size()) {
      const TokPairMap::Slot* nm = merges.get(cur.c, sym[cur.next].c);
      if (nm) push_merge(&heap, {nm->rank, top.pos, nm->new_id});
    }
  }
}

int32_t lookup_char(const TokBpe& m, std::string_view word, size_t b, size_t e, bool first,
                    bool last, std::string* buf) {
  bool plain = (first || m.prefix.empty()) && (!last || m.suffix.empty());
  if (plain) {
    if (e - b <= 3 && !m.bmp_ids.empty()) {  // code points below U+10000
      size_t i = b;
      uint32_t cp = utf8_next(word, &i);
      return cp < m.bmp_ids.size() ? m.bmp_ids[cp] : -1;
    }
    return m.vocab.get(word.substr(b, e - b));
  }
  buf->clear();
  if (!first) *buf += m.prefix;
  buf->append(word.data() + b, e - b);
  if (last) *buf += m.suffix;
  return m.vocab.get(*buf);
}

void merge_word(const TokBpe& m, std::string_view w, Scratch* sc, std::vector<int32_t>* out) {
  std::vector<Symbol>& sym = sc->symbols;
  sym.clear();
  bool unk_pending = false;
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  size_t i = 0;
  while (i < w.size()) {
    size_t b = i;
    i += std::min(utf8_len(static_cast<uint8_t>(w[i])), w.size() - i);
    bool first = b == 0, last = i >= w.size();
    uint32_t byte_len = static_cast<uint32_t>(i - b);
    int32_t id = lookup_char(m, w, b, i, first, last, &sc->buf);
    if (id >= 0) {
      if (unk_pending) {
        add_symbol(&sym, unk_id, unk_len);
        unk_pending = false;
      }
      add_symbol(&sym, id, byte_len);
      continue;
    }
    if (m.byte_fallback) {
      // The bytes of the char as looked up (with prefix/suffix), each as <0xNN>. As in Rust, a
      // pending unk is not flushed first.
      std::string s;
      if (!first) s += m.prefix;
      s.append(w.data() + b, i - b);
      if (last) s += m.suffix;
      bool all = true;
      for (unsigned char c : s) all &= m.byte_ids[c] >= 0;
      if (all) {
        for (unsigned char c : s) add_symbol(&sym, m.byte_ids[c], 1);
        continue;
      }
    }
    if (m.has_unk) {
      if (m.unk_id < 0)
        fail("tokenizer: model.unk_token '%s' is not in the vocab", m.unk_token.c_str());
      if (unk_pending && m.fuse_unk) {
        unk_len += byte_len;
      } else {
        if (unk_pending) add_symbol(&sym, unk_id, unk_len);
        unk_pending = true;
        unk_id = m.unk_id;
        unk_len = byte_len;
      }
    }
    // No unk token: the character is dropped, as in Rust.
  }
  if (unk_pending) add_symbol(&sym, unk_id, unk_len);
  merge_all(m.merges, sym, sc->heap);
  for (const Symbol& s : sym)
    if (s.len != 0) out->push_back(s.c);
}

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

std::shared_ptr<TokBpeCache> bpe_cache_new() {
  return std::make_shared<TokBpeCache>();
}

void bpe_encode_word(const TokBpe& m, TokBpeCache* cache, std::string_view word,
                     std::vector<int32_t>* out) {
  if (word.empty()) return;
  if (m.ignore_merges) {
    int32_t id = m.vocab.get(word);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
  }
  TokBpeCache::Shard* shard = nullptr;
  if (cache && word.size() < kMaxCachedLen) {
    shard = &cache->shards[std::hash<std::string_view>{}(word) % TokBpeCache::kShards];
    std::lock_guard<std::mutex> lock(shard->mu);
    auto it = shard->map.find(word);
    if (it != shard->map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out->size();
  merge_word(m, word, &scratch(), out);
  if (shard) {
    std::lock_guard<std::mutex> lock(shard->mu);
    if (shard->map.size() < TokBpeCache::kShardCapacity)
      shard->map.emplace(std::string(word), std::vector<int32_t>(out->begin() + start, out->end()));
  }
}

void bpe_build(TokBpe* m, const std::vector<std::pair<std::string, std::string>>& merges,
               const std::string& where) {
  // id -> token
  int32_t max_id = -1;
  for (size_t i = 0; i < m->vocab.size(); ++i) max_id = std::max(max_id, m->vocab.vals[i]);
  size_t vocab_where = where.rfind(".merges");
  if (static_cast<size_t>(max_id) > 4 * m->vocab.size() + (1u << 20))
    fail("%s.vocab: ids are too sparse (largest id %d for %zu tokens)",
         where.substr(0, vocab_where).c_str(), max_id, m->vocab.size());
  m->vocab_r.assign(static_cast<size_t>(max_id + 1), std::string());
  m->has_id.assign(static_cast<size_t>(max_id + 1), 0);
  for (size_t i = 0; i < m->vocab.size(); ++i) {
    int32_t id = m->vocab.vals[i];
    m->vocab_r[id] = std::string(m->vocab.key(i));
    m->has_id[id] = 1;
  }
  // <0xNN> byte tokens
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    m->byte_ids[b] = m->vocab.get(name);
  }
  // Single code points below U+10000
  m->bmp_ids.assign(0x10000, -1);
  for (size_t i = 0; i < m->vocab.size(); ++i) {
    std::string_view k = m->vocab.key(i);
    if (k.empty() || k.size() > 3) continue;
    size_t j = 0;
    uint32_t cp = utf8_next(k, &j);
    if (j == k.size() && cp < 0x10000) m->bmp_ids[cp] = m->vocab.get(k);
  }
  m->unk_id = m->has_unk ? m->vocab.get(m->unk_token) : -1;
  // merges -> (rank, new id); the merged token is a + b without b's continuing-subword prefix
  m->merges.reserve(merges.size());
  std::string merged;
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& a = merges[r].first;
    const std::string& b = merges[r].second;
    int32_t ia = m->vocab.get(a), ib = m->vocab.get(b);
    if (ia < 0) fail("%s[%zu]: merge token '%s' is not in the vocab", where.c_str(), r, a.c_str());
    if (ib < 0) fail("%s[%zu]: merge token '%s' is not in the vocab", where.c_str(), r, b.c_str());
    size_t plen = std::min(m->prefix.size(), b.size());
    merged.assign(a);
    merged.append(b, plen, std::string::npos);
    int32_t inew = m->vocab.get(merged);
    if (inew < 0)
      fail("%s[%zu]: merged token '%s' is not in the vocab", where.c_str(), r, merged.c_str());
    m->merges.put(ia, ib, static_cast<uint32_t>(r), inew);
  }
}

}  // namespace tok

}  // namespace moe
