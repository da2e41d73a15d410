"""`moe serve`: a client that disconnects mid-stream frees its slot at once, and SIGTERM / SIGINT
end running streams with an error event and [DONE], stop accepting, and exit 0.
Usage: serve_lifecycle_test.py MOE_BINARY"""
import json
import os
import shutil
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, make_chat_model, post, request, temp_dir  # noqa: E402

MSGS = [{"role": "user", "content": "hello there"}]


def open_stream(port, max_tokens=100000):
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"messages": MSGS, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while got.count(b"data: ") < 4:
        chunk = s.recv(4096)
        check(chunk, "the stream ended early: %r" % got)
        got += chunk
    return s


def metric(port, name):
    _, _, raw = request(port, "GET", "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def disconnect_test(moe, model):
    srv = Server(moe, model, "--parallel", "1", "--max-queue", "0", "--threads", "1", "--ctx", "4096")
    try:
        s = open_stream(srv.port, 4000)
        check(metric(srv.port, "moe_busy_sequences") == 1, "the stream holds no slot")
        s.close()
        t0 = time.time()
        while metric(srv.port, "moe_busy_sequences") != 0 and time.time() - t0 < 1:
            time.sleep(0.01)
        freed = time.time() - t0
        check(metric(srv.port, "moe_busy_sequences") == 0, "the slot was not freed after the disconnect")
        st, j = post(srv.port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 2})
        check(st == 200, "the freed slot did not serve the next request: %d %s" % (st, j))
        print("disconnect: slot freed within %.3f s" % freed)
    finally:
        srv.kill()


def signal_test(moe, model, sig):
    srv = Server(moe, model, "--threads", "1", "--ctx", "4096")
    try:
        s = open_stream(srv.port, 4000)
        srv.proc.send_signal(sig)
        s.settimeout(10)
        got = b""
        while b"[DONE]" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        check(b'"error"' in got and b"data: [DONE]" in got, "the stream did not end with an error event: %r" % got[-300:])
        rc = srv.proc.wait(timeout=15)
        time.sleep(0.2)  # let the log reader take the last lines
        check(rc == 0, "exit code %d after %s: %s" % (rc, sig, "".join(srv.log[-10:])))
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            fail_accept = True
        except OSError:
            fail_accept = False
        check(not fail_accept, "the server still accepts connections after %s" % sig)
        print("%s: stream ended with an error event, exit 0" % signal.Signals(sig).name)
    finally:
        srv.kill()


def main():
    moe = sys.argv[1]
    work = temp_dir()
    try:
        model = make_chat_model(moe, work)
        disconnect_test(moe, model)
        signal_test(moe, model, signal.SIGTERM)
        signal_test(moe, model, signal.SIGINT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS: disconnect and shutdown")


if __name__ == "__main__":
    main()
