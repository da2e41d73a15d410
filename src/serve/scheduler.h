// Continuous batching: one scheduler thread runs every active sequence of the server.
//
// Each step it admits queued requests into free KV slots (reusing a cached prefix, kv_slots.h),
// then builds ONE batched forward (infer_forward_batch): the next token of every decoding
// sequence, plus a chunk of at most `chunk` tokens of pending prompts, so a new prompt is
// prefilled in pieces between decode steps and never stalls the running streams. Each selected
// expert's weights are read once per step for all the tokens routed to it. After the forward,
// every sequence whose logits are ready samples its next token (its own seeded sampler),
// detokenizes it, checks end-of-sequence ids, stop strings (held back until ruled out) and its
// length, and hands the token to its SeqStream. A cancelled (client gone) or timed-out sequence
// leaves at the start of the next step, which frees its slot.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "infer/forward.h"
#include "infer/sampler.h"
#include "serve/kv_slots.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "serve/seq_stream.h"

namespace moe {

struct SchedulerOptions {
  int parallel = 4;     // KV slots: sequences decoded together
  int ctx = 2048;       // per-sequence context
  int chunk = 64;       // most prompt tokens prefilled per step
  int max_queue = 64;   // requests waiting for a slot before submit refuses
  int threads = 0;      // OpenMP threads of the scheduler thread (>0: what the caller's thread
                        // uses; a new thread does not inherit omp_set_num_threads, and the
                        // attention scratch is sized by the caller's count)
};

// One request inside the scheduler.
struct ServeSeq {
  std::shared_ptr<SeqStream> out;
  ServeRequest req;
  int slot = -1;
  int prefilled = 0;       // prompt tokens in the cache
  int32_t next = -1;       // sampled, not yet in the cache (-1: still prefilling)
  int generated = 0;
  Sampler sampler;
  DecodeStream ds;
  std::string held;        // generated text not yet released (a possible stop string's start)
  std::vector<int32_t> order;  // (V) logprobs scratch, only when asked for
};

struct Scheduler {
  const Model* m = nullptr;
  const Tokenizer* tok = nullptr;   // may be null: no text
  std::vector<int32_t> eos_ids;     // end-of-sequence and end-of-turn ids
  SchedulerOptions opt;
  ServeMetrics* metrics = nullptr;
  KvSlots kv;
  InferState st;                    // T_max = parallel + chunk; its own cache unused (ctx 1)
  RouteCapture cap;
  std::mutex mu;                    // guards queue and stopping
  std::condition_variable cv;
  std::deque<std::unique_ptr<ServeSeq>> queue;
  std::vector<std::unique_ptr<ServeSeq>> active;  // scheduler thread only
  bool stopping = false;
  int n_active = 0;                 // sequences holding a slot (under mu)
  std::thread thread;
};

void scheduler_start(Scheduler* s, const Model& m, const Tokenizer* tok,
                     const std::vector<int32_t>& eos_ids, const SchedulerOptions& opt,
                     ServeMetrics* metrics);

// Queues a request; false when max_queue requests already wait beyond the free slots. The stream gets its tokens and its finish.
bool scheduler_submit(Scheduler* s, const ServeRequest& req, const std::shared_ptr<SeqStream>& out);

// Ends every queued and running sequence with FINISH_SHUTDOWN and joins the thread.
void scheduler_stop(Scheduler* s);

}  // namespace moe
