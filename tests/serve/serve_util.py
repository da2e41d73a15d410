"""Helpers of the `moe serve` tests: a tiny trained chat model, a server on a free loopback port
that is always killed at the end, and small HTTP clients (the standard library only)."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def make_chat_model(moe, work):
    """A 1-layer MoE trained for a few steps on a repeated sentence, with a ChatML template."""
    corpus = os.path.join(work, "corpus")
    os.makedirs(corpus, exist_ok=True)
    with open(os.path.join(corpus, "a.txt"), "w") as f:
        f.write("hello there, how are you today? i am fine, thank you. " * 400)
    out = os.path.join(work, "chat-model")
    r = subprocess.run([moe, "train", "--data", corpus, "--out", out, "--vocab", "300", "--layers", "1",
                        "--d-model", "32", "--heads", "2", "--experts", "4", "--top-k", "2",
                        "--expert-ffn", "32", "--batch", "4", "--seq", "32", "--steps", "20",
                        "--threads", "1", "--quiet"], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "moe train failed: " + r.stderr)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "chat_template": CHATML}, f)
    return out


class Server:
    """`moe serve --port 0` in its own process group; stop() (also at exit) kills it."""

    def __init__(self, moe, model, *args, env=None):
        self.proc = subprocess.Popen([moe, "serve", "--model", model, "--port", "0", *args],
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     env=env)
        self.log = []
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"on http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.kill()
            fail("the server did not start: " + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def request(port, method, path, body=None, headers=None, timeout=60):
    """(status, headers dict, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, dict(r.getheaders()), out


def post(port, path, body, headers=None, timeout=60):
    status, _, out = request(port, "POST", path, body, headers, timeout)
    try:
        return status, json.loads(out)
    except ValueError:
        return status, out


def sse_events(raw):
    """The data payloads of an SSE body, in order."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return [ev[6:] for ev in text.split("\n\n") if ev.startswith("data: ")]


def run_with_server(fn, moe, model, *args):
    srv = Server(moe, model, *args)
    try:
        fn(srv)
    finally:
        srv.kill()


def temp_dir():
    return tempfile.mkdtemp(prefix="moe-serve-")
