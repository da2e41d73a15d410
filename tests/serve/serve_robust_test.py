"""`moe serve` under load and abuse, on loopback, bounded in time: 32 concurrent clients send 500
requests (no errors; resident memory after the run within 10% of after the first 50), then a
half-written request, a client that stops reading a stream, 200 connections opened and dropped,
and oversized headers, while the server keeps answering others. Usage: serve_robust_test.py MOE"""
import http.client
import json
import os
import shutil
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, make_chat_model, post, request, sse_events, temp_dir  # noqa: E402

MSGS = [{"role": "user", "content": "hello there"}]


def one_request(port, i):
    kind = i % 3
    if kind == 0:
        s, j = post(port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 4, "seed": i})
        return s == 200 and j["usage"]["completion_tokens"] >= 1
    if kind == 1:
        s, _, raw = request(port, "POST", "/v1/chat/completions", {"messages": MSGS, "max_tokens": 4, "stream": True,
                                                                   "seed": i})
        return s == 200 and sse_events(raw)[-1] == "[DONE]"
    s, j = post(port, "/v1/completions", {"prompt": "how are you " * (1 + i % 5), "max_tokens": 4, "seed": i})
    return s == 200 and len(j["choices"]) == 1


def load_test(srv):
    total, clients = 500, 32
    state = {"next": 0, "done": 0, "errors": [], "rss50": None}
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = state["next"]
                if i >= total:
                    return
                state["next"] += 1
            try:
                ok = one_request(srv.port, i)
            except Exception as e:  # noqa: BLE001
                ok, msg = False, repr(e)
            else:
                msg = "bad reply"
            with lock:
                if not ok:
                    state["errors"].append("request %d: %s" % (i, msg))
                state["done"] += 1
                if state["done"] == 50:
                    state["rss50"] = srv.rss_kib()
    t0 = time.time()
    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(240)
    check(not any(t.is_alive() for t in ts), "the load test did not finish in time")
    check(not state["errors"], "%d errors, first: %s" % (len(state["errors"]), state["errors"][:3]))
    rss = srv.rss_kib()
    print("load: %d requests from %d clients in %.1f s; RSS after 50: %d KiB, after %d: %d KiB" %
          (total, clients, time.time() - t0, state["rss50"], total, rss))
    if "ASAN_OPTIONS" in os.environ:
        # AddressSanitizer's allocator (per-thread caches, quarantine, redzones) holds freed
        # memory, so resident size measures it rather than the server; the release build checks
        # the bound, and this run still checks every request and the rest of the robustness cases.
        print("RSS bound not checked under AddressSanitizer (checked in the release build)")
    else:
        check(rss <= 1.10 * state["rss50"], "RSS grew from %d to %d KiB" % (state["rss50"], rss))


def healthy(port, what):
    t0 = time.time()
    s, j = post(port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 2}, timeout=10)
    check(s == 200, "%s: another client got %d %s" % (what, s, j))
    check(time.time() - t0 < 5, "%s: another client waited %.1f s" % (what, time.time() - t0))


def abuse_tests(srv):
    p = srv.port
    # A half-written request: headers promise a body that never comes.
    half = socket.create_connection(("127.0.0.1", p))
    half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 500\r\n\r\n{\"messages\": [")
    healthy(p, "half-written request")
    # A client that starts a long stream and never reads it.
    stuck = socket.create_connection(("127.0.0.1", p))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"messages": MSGS, "max_tokens": 1500, "ignore_eos": True, "stream": True}).encode()
    stuck.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.3)
    healthy(p, "client that stops reading")
    # 200 connections opened and dropped, some after a partial request line.
    for i in range(200):
        c = socket.create_connection(("127.0.0.1", p))
        if i % 2:
            c.sendall(b"GET /heal")
        c.close()
    healthy(p, "200 dropped connections")
    # Oversized headers.
    try:
        s, _, _ = request(p, "GET", "/health", headers={"X-Big": "a" * 100000})
        check(s >= 400, "oversized headers answered %d" % s)
    except (ConnectionError, OSError, http.client.HTTPException):
        pass  # the server dropped the connection: also a refusal
    healthy(p, "oversized headers")
    half.close()
    stuck.close()
    healthy(p, "after closing the stuck clients")


def main():
    moe = sys.argv[1]
    work = temp_dir()
    try:
        model = make_chat_model(moe, work)
        srv = Server(moe, model, "--parallel", "8", "--threads", "1")
        try:
            load_test(srv)
            abuse_tests(srv)
        finally:
            srv.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS: moe serve under load and abuse")


if __name__ == "__main__":
    main()
