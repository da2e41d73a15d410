#include "serve/server.h"

#include <httplib.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "io/mapped_file.h"
#include "serve/api_error.h"
#include "serve/chat_page.h"
#include "serve/openai_json.h"
#include "serve/scheduler.h"

namespace moe {

using nlohmann::json;

namespace {

std::atomic<bool> g_signal{false};
void on_signal(int) { g_signal.store(true); }

using Clock = std::chrono::steady_clock;

struct ServeState {
  ServeOptions o;
  Model m;
  Tokenizer tok;
  ChatTemplate tmpl;
  bool have_tok = false, have_tmpl = false;
  std::string model_id;
  RequestContext rc;
  ServeMetrics metrics;
  Scheduler sched;
  std::atomic<bool> stopping{false};
};

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(json_text(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, api_error_json(e)); }

// Runs fn, turning ApiError and every other exception into an OpenAI error object, and counts
// the request by endpoint and status.
template <typename F>
void handle(ServeState* st, const char* endpoint, httplib::Response& res, F&& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const MoeError& e) {
    send_error(res, ApiError(400, "invalid_request_error", "invalid_value", e.what()));
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, "server_error", "internal_error", e.what()));
  }
  metrics_count_request(&st->metrics, endpoint, res.status);
}

ApiError error_for(FinishReason f, const std::string& msg) {
  switch (f) {
    case FINISH_TIMEOUT: return ApiError(504, "timeout_error", "timeout", "the request timed out");
    case FINISH_SHUTDOWN: return ApiError(503, "server_error", "shutting_down", "the server is shutting down");
    case FINISH_CANCELLED: return ApiError(499, "server_error", "cancelled", "the request was cancelled");
    default: return ApiError(500, "server_error", "internal_error", msg.empty() ? "generation failed" : msg);
  }
}

// State of one streamed reply, shared with httplib's content provider.
struct StreamJob {
  std::shared_ptr<SeqStream> out;
  ReplyInfo info;
  bool include_usage = false;
  bool started = false;
};

bool write(httplib::DataSink& sink, const std::string& s) { return sink.write(s.data(), s.size()); }

// One call of the content provider: waits briefly for tokens, writes them as events; at the
// finish writes the last chunk, the usage and [DONE] (or an error event). false: client gone.
bool stream_pump(StreamJob* job, httplib::DataSink& sink) {
  const bool un = job->include_usage;
  if (!job->started) {
    job->started = true;
    if (job->info.chat && !write(sink, sse_event(reply_role_chunk(job->info, un)))) return false;
  }
  std::vector<TokenOut> toks;
  FinishReason fin;
  std::string tail, error;
  int pt, ct, cached;
  {
    std::unique_lock<std::mutex> lk(job->out->mu);
    job->out->cv.wait_for(lk, std::chrono::milliseconds(100), [&] {
      return !job->out->pending.empty() || job->out->finish != FINISH_NONE;
    });
    toks.swap(job->out->pending);
    fin = job->out->finish;
    if (fin != FINISH_NONE) tail = job->out->tail, error = job->out->error;
    pt = job->out->prompt_tokens, ct = job->out->completion_tokens, cached = job->out->cached_tokens;
  }
  for (size_t i = 0; i < toks.size(); ++i) {  // one event per token, as OpenAI streams
    std::vector<TokenOut> one(1, toks[i]);
    if (!write(sink, sse_event(reply_chunk(job->info, one, "", FINISH_NONE, un)))) return false;
  }
  if (fin == FINISH_NONE) return sink.is_writable();
  if (fin == FINISH_STOP || fin == FINISH_LENGTH) {
    if (!write(sink, sse_event(reply_chunk(job->info, {}, tail, fin, un)))) return false;
    if (un && !write(sink, sse_event(reply_usage_chunk(job->info, usage_json(pt, ct, cached)))))
      return false;
  } else {
    if (!write(sink, sse_event(api_error_json(error_for(fin, error))))) return false;
  }
  if (!write(sink, "data: [DONE]\n\n")) return false;
  sink.done();
  return true;
}

void handle_generate(ServeState* st, const httplib::Request& req, httplib::Response& res, bool chat) {
  if (st->stopping.load()) throw error_for(FINISH_SHUTDOWN, "");
  const json body = parse_json_body(req.body);
  ServeRequest r = parse_generation_request(body, chat, st->rc);
  if (!r.model.empty() && r.model != st->model_id)
    throw ApiError(404, "invalid_request_error", "model_not_found",
                   "the model '" + r.model + "' does not exist (this server has '" + st->model_id + "')");
  auto out = std::make_shared<SeqStream>();
  if (st->o.timeout > 0)
    out->deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(st->o.timeout * 1000));
  if (!scheduler_submit(&st->sched, r, out)) {
    if (st->stopping.load()) throw error_for(FINISH_SHUTDOWN, "");
    throw ApiError(429, "rate_limit_error", "queue_full",
                   "the request queue is full (" + std::to_string(st->o.max_queue) + "); retry later");
  }
  ReplyInfo info = reply_info(chat, st->model_id, r.top_logprobs, r.return_tokens,
                              st->have_tok ? &st->tok : nullptr);
  if (r.stream) {
    auto job = std::make_shared<StreamJob>();
    job->out = out;
    job->info = info;
    job->include_usage = r.include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [job](size_t, httplib::DataSink& sink) {
          const bool ok = stream_pump(job.get(), sink);
          if (!ok) job->out->cancel.store(true);
          return ok;
        },
        [job](bool success) { if (!success) job->out->cancel.store(true); });
    return;
  }
  std::unique_lock<std::mutex> lk(out->mu);
  out->cv.wait(lk, [&] { return out->finish != FINISH_NONE; });
  if (out->finish != FINISH_STOP && out->finish != FINISH_LENGTH) throw error_for(out->finish, out->error);
  send_json(res, 200, reply_full(info, out->pending, out->tail, out->finish,
                                 usage_json(out->prompt_tokens, out->completion_tokens, out->cached_tokens)));
}

void handle_tokenize(ServeState* st, const httplib::Request& req, httplib::Response& res) {
  const json body = parse_json_body(req.body);
  if (!st->have_tok) api_bad_request("this model has no tokenizer.json");
  if (!body.contains("content") || !body["content"].is_string())
    api_bad_request("'content' must be a string", "missing_field");
  bool add_special = false;
  if (body.contains("add_special")) {
    if (!body["add_special"].is_boolean()) api_bad_request("'add_special' must be a boolean");
    add_special = body["add_special"].get<bool>();
  }
  send_json(res, 200, {{"tokens", tokenizer_encode(st->tok, body["content"].get<std::string>(), add_special)}});
}

void handle_detokenize(ServeState* st, const httplib::Request& req, httplib::Response& res) {
  const json body = parse_json_body(req.body);
  if (!st->have_tok) api_bad_request("this model has no tokenizer.json");
  if (!body.contains("tokens") || !body["tokens"].is_array())
    api_bad_request("'tokens' must be an array of token ids", "missing_field");
  std::vector<int32_t> ids;
  for (const json& x : body["tokens"]) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= st->m.cfg.vocab)
      api_bad_request("'tokens' must hold integers in [0, " + std::to_string(st->m.cfg.vocab) + ")");
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  send_json(res, 200, {{"content", tokenizer_decode(st->tok, ids, false)}});
}

void handle_apply_template(ServeState* st, const httplib::Request& req, httplib::Response& res) {
  const json body = parse_json_body(req.body);
  if (!body.contains("messages")) api_bad_request("'messages' is required", "missing_field");
  bool gen = true;
  if (body.contains("add_generation_prompt")) {
    if (!body["add_generation_prompt"].is_boolean()) api_bad_request("'add_generation_prompt' must be a boolean");
    gen = body["add_generation_prompt"].get<bool>();
  }
  send_json(res, 200, {{"prompt", render_messages(body["messages"], st->rc, gen)}});
}

double steady_seconds() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

void add_routes(ServeState* st, httplib::Server& svr) {
  svr.Get("/health", [st](const httplib::Request&, httplib::Response& res) {
    handle(st, "/health", res, [&] { send_json(res, 200, {{"status", "ok"}}); });
  });
  svr.Get("/v1/models", [st](const httplib::Request&, httplib::Response& res) {
    handle(st, "/v1/models", res, [&] {
      json model = {{"id", st->model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "moe.cpp"},
                    {"meta", {{"model_type", arch_name(st->m.cfg.arch)}, {"vocab", st->m.cfg.vocab},
                              {"n_ctx", st->rc.ctx}, {"parallel", st->o.parallel}}}};
      send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
    });
  });
  svr.Post("/v1/chat/completions", [st](const httplib::Request& req, httplib::Response& res) {
    handle(st, "/v1/chat/completions", res, [&] { handle_generate(st, req, res, true); });
  });
  svr.Post("/v1/completions", [st](const httplib::Request& req, httplib::Response& res) {
    handle(st, "/v1/completions", res, [&] { handle_generate(st, req, res, false); });
  });
  svr.Post("/tokenize", [st](const httplib::Request& req, httplib::Response& res) {
    handle(st, "/tokenize", res, [&] { handle_tokenize(st, req, res); });
  });
  svr.Post("/detokenize", [st](const httplib::Request& req, httplib::Response& res) {
    handle(st, "/detokenize", res, [&] { handle_detokenize(st, req, res); });
  });
  svr.Post("/apply-template", [st](const httplib::Request& req, httplib::Response& res) {
    handle(st, "/apply-template", res, [&] { handle_apply_template(st, req, res); });
  });
  svr.Get("/metrics", [st](const httplib::Request&, httplib::Response& res) {
    handle(st, "/metrics", res, [&] {
      res.set_content(metrics_render(&st->metrics, steady_seconds()), "text/plain; version=0.0.4");
    });
  });
  svr.Get("/", [st](const httplib::Request&, httplib::Response& res) {
    handle(st, "/", res, [&] { res.set_content(chat_page_html(), "text/html; charset=utf-8"); });
  });
}

// API key check before routing (/, /health and /metrics stay open), and error bodies for what
// httplib answers itself (404 no route, 413 body too large, 400 malformed HTTP).
void add_guards(ServeState* st, httplib::Server& svr) {
  svr.set_pre_routing_handler([st](const httplib::Request& req, httplib::Response& res) {
    if (st->o.api_key.empty() || req.path == "/" || req.path == "/health" || req.path == "/metrics")
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + st->o.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "authentication_error", "invalid_api_key", "invalid or missing API key"));
    metrics_count_request(&st->metrics, "auth", 401);
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([st](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      send_error(res, ApiError(404, "invalid_request_error", "not_found", "no route " + req.method + " " + req.path));
    else if (res.status == 413)
      send_error(res, ApiError(413, "invalid_request_error", "payload_too_large",
                               "the request body exceeds " + std::to_string(st->o.max_body) + " bytes"));
    else
      send_error(res, ApiError(res.status, "invalid_request_error", "bad_request", "malformed HTTP request"));
  });
}

void load(ServeState* st) {
  const ServeOptions& o = st->o;
  if (o.parallel <= 0 || o.parallel > 1024) fail("--parallel must be in [1, 1024]");
  if (o.ctx <= 0) fail("--ctx must be positive");
  if (o.max_queue < 0) fail("--max-queue must be >= 0");
  if (o.timeout < 0) fail("--timeout must be >= 0");
  model_load(&st->m, o.model_dir);
  expert_cache_attach(&st->m, o.expert_cache);
  const std::string tj = o.model_dir + "/tokenizer.json", tc = o.model_dir + "/tokenizer_config.json";
  if (file_exists(tj)) {
    tokenizer_load(&st->tok, tj);
    st->have_tok = true;
  }
  if (file_exists(tc)) {
    const json cfg = json::parse(read_text_file(tc), nullptr, false);
    if (cfg.is_object() && cfg.contains("chat_template")) {
      st->tmpl = chat_template_load(tc);
      st->have_tmpl = true;
    }
  }
  std::string dir = o.model_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  st->model_id = dir.substr(dir.find_last_of('/') == std::string::npos ? 0 : dir.find_last_of('/') + 1);
  st->rc.tok = st->have_tok ? &st->tok : nullptr;
  st->rc.tmpl = st->have_tmpl ? &st->tmpl : nullptr;
  st->rc.vocab = st->m.cfg.vocab;
  st->rc.ctx = std::min(o.ctx, st->m.cfg.max_pos > 0 ? st->m.cfg.max_pos : o.ctx);
}

[[noreturn]] void port_error(Scheduler* sched, const ServeOptions& o) {
  scheduler_stop(sched);
  fail("cannot listen on %s:%d", o.host.c_str(), o.port);
}

}  // namespace

int serve_run(const ServeOptions& opts, const std::function<void(int)>& on_listen) {
  // Many HTTP threads would each get a glibc malloc arena; a few shared ones keep the resident
  // memory flat under load.
  mallopt(M_ARENA_MAX, 2);
  auto st = std::make_unique<ServeState>();
  st->o = opts;
  load(st.get());
  const std::vector<int32_t> eos =
      st->have_tok ? chat_stop_ids(st->m.cfg.eos_ids, st->tok, st->have_tmpl ? &st->tmpl : nullptr)
                   : std::vector<int32_t>(st->m.cfg.eos_ids.begin(), st->m.cfg.eos_ids.end());
  metrics_init(&st->metrics, st->m, opts.parallel);
  SchedulerOptions so;
  so.parallel = opts.parallel;
  so.ctx = st->rc.ctx;
  so.chunk = opts.chunk;
  so.max_queue = opts.max_queue;
  so.threads = opts.threads;
  scheduler_start(&st->sched, st->m, st->rc.tok, eos, so, &st->metrics);
  httplib::Server svr;
  const size_t threads = opts.http_threads > 0 ? opts.http_threads
                                               : std::min(256, opts.parallel + opts.max_queue + 8);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(opts.max_body);
  svr.set_read_timeout(10, 0);
  svr.set_write_timeout(10, 0);
  svr.set_keep_alive_timeout(2);
  add_guards(st.get(), svr);
  add_routes(st.get(), svr);
  std::signal(SIGPIPE, SIG_IGN);
  g_signal.store(false);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  // This cpp-httplib listens with a backlog of 5, which resets connections that arrive together;
  // listen() again on the bound socket raises it.
  socket_t listen_fd = INVALID_SOCKET;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = sock;
  });
  const int port = opts.port == 0 ? svr.bind_to_any_port(opts.host) : (svr.bind_to_port(opts.host, opts.port) ? opts.port : -1);
  if (port >= 0 && ::listen(listen_fd, 1024) != 0) port_error(&st->sched, opts);
  if (port < 0) port_error(&st->sched, opts);
  std::fprintf(stderr, "moe serve: %s on http://%s:%d (%d slots of %d tokens)\n", st->model_id.c_str(),
               opts.host.c_str(), port, opts.parallel, st->rc.ctx);
  if (on_listen) on_listen(port);
  std::thread watcher([&] {
    while (!g_signal.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    st->stopping.store(true);
    scheduler_stop(&st->sched);  // every stream gets its error event
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    svr.stop();
  });
  svr.listen_after_bind();
  g_signal.store(true);
  watcher.join();
  std::fprintf(stderr, "moe serve: stopped\n");
  return 0;
}

}  // namespace moe
