#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/clock.h"
#include "core/error.h"
#include "infer/sampler.h"
#include "ops/ops.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

void finish(Scheduler* s, ServeSeq* q, FinishReason why, const std::string& error = "") {
  if (q->slot >= 0) {
    kv_slots_release(&s->kv, q->slot);
    q->slot = -1;
  }
  std::lock_guard<std::mutex> g(q->out->mu);
  q->out->tail = std::move(q->held);  // text that no stop string can claim any more
  q->held.clear();
  q->out->finish = why;
  q->out->error = error;
  q->out->cv.notify_all();
}

// Log-probabilities of the chosen token and the top alternatives, from raw logits (V).
void fill_logprobs(ServeSeq* q, const float* logits, int V, TokenOut* t) {
  float mx = logits[0];
  for (int v = 1; v < V; ++v) mx = std::max(mx, logits[v]);
  double sum = 0.0;
  for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  t->logprob = logits[t->id] - lse;
  const int n = std::min(q->req.top_logprobs, V);
  if (n <= 0) return;
  for (int v = 0; v < V; ++v) q->order[v] = v;
  std::partial_sort(q->order.begin(), q->order.begin() + n, q->order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int i = 0; i < n; ++i) t->top.emplace_back(q->order[i], logits[q->order[i]] - lse);
}

// Length of the longest suffix of text that begins one of the stop strings.
size_t stop_prefix_hold(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& st : stops)
    for (size_t k = std::min(st.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, st, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

// Samples q's next token from logits (V), detokenizes it and hands it over; finishes q on an
// end-of-sequence id, a stop string or its length. Returns true if q finished.
bool take_token(Scheduler* s, ServeSeq* q, const float* logits) {
  const int V = s->m->cfg.vocab;
  TokenOut t;
  t.id = sampler_next(&q->sampler, logits, V);
  if (q->req.top_logprobs >= 0) fill_logprobs(q, logits, V, &t);
  ++q->generated;
  const bool eos = !q->req.ignore_eos &&
                   std::find(s->eos_ids.begin(), s->eos_ids.end(), t.id) != s->eos_ids.end();
  FinishReason why = FINISH_NONE;
  if (eos) {
    why = FINISH_STOP;
  } else if (s->tok) {
    q->held += decode_stream_step(*s->tok, &q->ds, t.id);
    size_t cut = std::string::npos;
    for (const std::string& st : q->req.stop) cut = std::min(cut, q->held.find(st));
    if (cut != std::string::npos) {
      q->held.resize(cut);
      why = FINISH_STOP;
    }
  }
  if (why == FINISH_NONE) {
    const size_t hold = stop_prefix_hold(q->held, q->req.stop);
    t.text = q->held.substr(0, q->held.size() - hold);
    q->held.erase(0, q->held.size() - hold);
    const int pos = static_cast<int>(s->kv.slots[q->slot].tokens.size());
    if (q->generated >= q->req.max_tokens || pos >= s->kv.ctx) why = FINISH_LENGTH;
  }
  const int32_t id = t.id;
  {
    std::lock_guard<std::mutex> g(q->out->mu);
    q->out->pending.push_back(std::move(t));
    q->out->completion_tokens = q->generated;
    q->out->cv.notify_all();
  }
  if (why != FINISH_NONE) {
    finish(s, q, why);
    return true;
  }
  q->next = id;
  return false;
}

// Moves queued requests into free slots; drops cancelled and timed-out ones.
void admit(Scheduler* s) {
  std::lock_guard<std::mutex> g(s->mu);
  const Clock::time_point now = Clock::now();
  for (auto it = s->queue.begin(); it != s->queue.end();) {
    ServeSeq* q = it->get();
    const bool cancel = q->out->cancel.load(), late = now > q->out->deadline;
    if (cancel || late) {
      finish(s, q, cancel ? FINISH_CANCELLED : FINISH_TIMEOUT);
      it = s->queue.erase(it);
    } else {
      ++it;
    }
  }
  while (!s->queue.empty()) {
    ServeSeq* q = s->queue.front().get();
    int reuse = 0;
    const int slot = kv_slots_acquire(&s->kv, q->req.prompt, &reuse);
    if (slot < 0) break;
    q->slot = slot;
    q->prefilled = reuse;
    {
      std::lock_guard<std::mutex> g2(q->out->mu);
      q->out->cached_tokens = reuse;
    }
    {
      std::lock_guard<std::mutex> g2(s->metrics->mu);
      s->metrics->prompt_tokens += q->req.prompt.size();
      s->metrics->cached_tokens += reuse;
    }
    s->active.push_back(std::move(s->queue.front()));
    s->queue.pop_front();
  }
  s->n_active = kv_slots_busy(s->kv);
  std::lock_guard<std::mutex> g2(s->metrics->mu);
  s->metrics->queue_depth = static_cast<int>(s->queue.size());
  s->metrics->busy = s->n_active;
}

// Publishes the slots in use (for submit's queue limit and the metrics) after sequences left.
void publish_busy(Scheduler* s) {
  std::lock_guard<std::mutex> g(s->mu);
  s->n_active = kv_slots_busy(s->kv);
  std::lock_guard<std::mutex> g2(s->metrics->mu);
  s->metrics->busy = s->n_active;
}

// Ends active sequences whose client left or whose time ran out.
void drop_cancelled(Scheduler* s) {
  const Clock::time_point now = Clock::now();
  for (auto& q : s->active) {
    if (!q || q->slot < 0) continue;
    if (q->out->cancel.load()) finish(s, q.get(), FINISH_CANCELLED);
    else if (now > q->out->deadline) finish(s, q.get(), FINISH_TIMEOUT);
  }
  const size_t before = s->active.size();
  s->active.erase(std::remove_if(s->active.begin(), s->active.end(),
                                 [](const std::unique_ptr<ServeSeq>& q) { return q->slot < 0; }),
                  s->active.end());
  if (s->active.size() != before) publish_busy(s);
}

// One batched forward over every active sequence; returns false when there was nothing to run.
bool step(Scheduler* s) {
  std::vector<SeqSpan> spans;   // (n_seqs)
  std::vector<ServeSeq*> who;   // (n_seqs)
  int budget = s->opt.chunk, T = 0;
  for (auto& q : s->active) {  // decoding sequences first: one token each
    if (q->next < 0) continue;
    KvSlot& slot = s->kv.slots[q->slot];
    SeqSpan sp;
    sp.cache = slot.cache.data();
    sp.pos = static_cast<int>(slot.tokens.size());
    sp.ctx = s->kv.ctx;
    sp.ids = &q->next;
    sp.n = 1;
    spans.push_back(sp);
    who.push_back(q.get());
    ++T;
  }
  for (auto& q : s->active) {  // then prompt chunks, within the step's budget
    if (q->next >= 0 || budget <= 0) continue;
    KvSlot& slot = s->kv.slots[q->slot];
    SeqSpan sp;
    sp.cache = slot.cache.data();
    sp.pos = static_cast<int>(slot.tokens.size());
    sp.ctx = s->kv.ctx;
    sp.ids = q->req.prompt.data() + q->prefilled;
    sp.n = std::min(budget, static_cast<int>(q->req.prompt.size()) - q->prefilled);
    budget -= sp.n;
    T += sp.n;
    spans.push_back(sp);
    who.push_back(q.get());
  }
  if (spans.empty()) return false;
  try {
    infer_forward_batch(*s->m, &s->st, spans.data(), static_cast<int>(spans.size()));
  } catch (const MoeError& e) {
    for (ServeSeq* q : who) finish(s, q, FINISH_ERROR, e.what());
    drop_cancelled(s);
    return true;
  }
  int generated = 0;
  const int V = s->m->cfg.vocab;
  for (size_t j = 0; j < spans.size(); ++j) {
    ServeSeq* q = who[j];
    KvSlot& slot = s->kv.slots[q->slot];
    slot.tokens.insert(slot.tokens.end(), spans[j].ids, spans[j].ids + spans[j].n);
    if (q->next < 0) {
      q->prefilled += spans[j].n;
      if (q->prefilled < static_cast<int>(q->req.prompt.size())) continue;
    }
    ++generated;
    try {  // a failure in sampling or detokenizing ends this sequence, not the server
      take_token(s, q, s->st.logits.data() + static_cast<int64_t>(j) * V);
    } catch (const std::exception& e) {
      if (q->slot >= 0) finish(s, q, FINISH_ERROR, e.what());
    }
  }
  metrics_step(s->metrics, s->cap, T, generated, now_s());
  drop_cancelled(s);
  return true;
}

void scheduler_loop(Scheduler* s) {
  ops_set_threads(s->opt.threads);
  while (true) {
    {
      std::unique_lock<std::mutex> lk(s->mu);
      s->cv.wait_for(lk, std::chrono::milliseconds(200), [&] {
        return s->stopping || !s->queue.empty() || !s->active.empty();
      });
      if (s->stopping) break;
    }
    drop_cancelled(s);
    admit(s);
    step(s);
  }
  for (auto& q : s->active) finish(s, q.get(), FINISH_SHUTDOWN);
  s->active.clear();
  std::lock_guard<std::mutex> g(s->mu);
  for (auto& q : s->queue) finish(s, q.get(), FINISH_SHUTDOWN);
  s->queue.clear();
}

}  // namespace

void scheduler_start(Scheduler* s, const Model& m, const Tokenizer* tok,
                     const std::vector<int32_t>& eos_ids, const SchedulerOptions& opt,
                     ServeMetrics* metrics) {
  MOE_CHECK(opt.parallel > 0 && opt.ctx > 0 && opt.chunk > 0 && opt.max_queue >= 0);
  s->m = &m;
  s->tok = tok;
  s->eos_ids = eos_ids;
  s->opt = opt;
  s->metrics = metrics;
  kv_slots_init(&s->kv, m, opt.parallel, opt.ctx);
  infer_state_init(&s->st, m, opt.parallel + opt.chunk, opt.ctx);
  s->st.cache.clear();  // the slots hold the caches
  s->st.cache.shrink_to_fit();
  s->st.capture = &s->cap;
  s->stopping = false;
  s->thread = std::thread(scheduler_loop, s);
}

bool scheduler_submit(Scheduler* s, const ServeRequest& req, const std::shared_ptr<SeqStream>& out) {
  auto q = std::make_unique<ServeSeq>();
  q->out = out;
  q->req = req;
  q->ds.skip_special = true;
  sampler_init(&q->sampler, req.sampling, s->m->cfg.vocab);
  if (req.top_logprobs > 0) q->order.resize(s->m->cfg.vocab);
  out->prompt_tokens = static_cast<int>(req.prompt.size());
  std::lock_guard<std::mutex> g(s->mu);
  const int waiting = static_cast<int>(s->queue.size()) + s->n_active - s->opt.parallel;
  if (s->stopping || waiting >= s->opt.max_queue) return false;
  s->queue.push_back(std::move(q));
  s->cv.notify_all();
  return true;
}

void scheduler_stop(Scheduler* s) {
  {
    std::lock_guard<std::mutex> g(s->mu);
    s->stopping = true;
    s->cv.notify_all();
  }
  if (s->thread.joinable()) s->thread.join();
}

}  // namespace moe
