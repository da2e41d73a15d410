// `moe serve`: an OpenAI-compatible HTTP server (cpp-httplib) over the continuous-batching
// scheduler (scheduler.h).
//
// Endpoints: POST /v1/chat/completions, POST /v1/completions (with stream: Server-Sent Events
// ending in `data: [DONE]`), GET /v1/models, GET /health, POST /tokenize, /detokenize,
// /apply-template, GET /metrics (Prometheus text), GET / (a small chat page). Every failure is an
// OpenAI error object {"error": {"message", "type", "code"}}: 400 bad JSON or fields, 401 wrong
// or missing API key, 404 unknown model or route, 413 body over the limit, 429 queue full, 504
// timeout, 503 shutting down. SIGTERM / SIGINT stop accepting, end running streams with an error
// event, and return 0.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "moe/expert_cache.h"

namespace moe {

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 8080;            // 0: any free port (printed)
  int parallel = 4;           // KV slots
  int ctx = 2048;             // per-sequence context (capped by the model's)
  int chunk = 64;             // prompt tokens prefilled per step
  std::string api_key;        // "" = none
  int max_queue = 64;
  double timeout = 600.0;     // seconds a request may take, queue included (0 = none)
  size_t max_body = 1 << 20;  // bytes
  int http_threads = 0;       // 0: parallel + max_queue + 8, at most 256
  int threads = 0;            // compute threads the caller set (ops_set_threads), for the scheduler
  ExpertCacheOptions expert_cache;  // hot-expert cache (--expert-cache GiB; 0 = off)
};

// Loads the model and serves until SIGTERM or SIGINT. on_listen (may be empty) gets the bound
// port. Returns 0 after a clean shutdown.
int serve_run(const ServeOptions& o, const std::function<void(int)>& on_listen = {});

}  // namespace moe
