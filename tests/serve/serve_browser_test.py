"""The chat page at / of `moe serve` in headless Chromium, driven over the DevTools protocol
(--remote-debugging-pipe, the standard library only): type a message into the box, press Enter,
and see the answer stream in (the assistant bubble ends in state done after one or more streamed
chunks); no console error or uncaught exception. Fails when chromium is not installed.
Usage: serve_browser_test.py MOE_BINARY"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, make_chat_model, request, temp_dir  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Cdp:
    """DevTools protocol over the pipe: Chromium reads commands on its fd 3, writes on fd 4."""

    def __init__(self, profile):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)
        self.proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                      "--disable-background-networking", "--disable-component-update",
                                      "--disable-sync", "--no-first-run", "--disable-default-apps",
                                      "--user-data-dir=" + profile, "--remote-debugging-pipe", "about:blank"],
                                     preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            check(time.time() < deadline, "no answer from chromium")
            chunk = os.read(self.from_child, 65536)
            check(chunk, "chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                check("error" not in m, "%s failed: %s" % (method, m.get("error")))
                return m.get("result", {})
            self.events.append(m)

    def eval(self, expr, session):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
        return r.get("result", {}).get("value")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.to_child)
        os.close(self.from_child)


def wait_for(cdp, session, expr, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cdp.eval(expr, session):
            return
        time.sleep(0.1)
    fail_state = cdp.eval("document.getElementById('log').innerHTML", session)
    check(False, "%s: timed out; the page shows %r" % (what, fail_state))


def drive(port, profile):
    cdp = Cdp(profile)
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Runtime.enable", session=session)
        cdp.call("Log.enable", session=session)
        cdp.call("Page.enable", session=session)
        cdp.call("Page.navigate", {"url": "http://127.0.0.1:%d/" % port}, session)
        wait_for(cdp, session, "document.readyState === 'complete' && document.getElementById('msg') !== null", "page load")
        cdp.eval("document.getElementById('msg').focus()", session)
        cdp.call("Input.insertText", {"text": "hello there"}, session)
        for kind in ("keyDown", "keyUp"):
            cdp.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                "windowsVirtualKeyCode": 13, "text": "\r" if kind == "keyDown" else ""},
                     session)
        wait_for(cdp, session, "(() => { const a = document.querySelector('.assistant, .error');"
                 " return a !== null && a.dataset.state !== 'streaming'; })()", "the streamed answer")
        user = cdp.eval("document.querySelector('.user').textContent", session)
        state = cdp.eval("JSON.stringify([...document.querySelectorAll('#log div')].map(d => [d.className, d.dataset.state, d.dataset.chunks, d.textContent]))", session)
        errors = [e for e in cdp.events if e.get("method") in ("Runtime.exceptionThrown",) or
                  (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error") or
                  (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))]
        return user, json.loads(state), errors
    finally:
        cdp.close()


def main():
    moe = sys.argv[1]
    check(os.access(CHROMIUM, os.X_OK), "%s is not installed (apt-get install -y chromium)" % CHROMIUM)
    work = temp_dir()
    profile = tempfile.mkdtemp(prefix="moe-chromium-")
    try:
        model = make_chat_model(moe, work)
        srv = Server(moe, model, "--threads", "1")
        try:
            s, _, page = request(srv.port, "GET", "/")
            check(s == 200 and b"<script>" in page, "no chat page at /")
            check(not re.search(rb"<script[^>]+src=|(src|href)=\"(https?:)?//", page), "the page loads an external resource")
            user, divs, errors = drive(srv.port, profile)
        finally:
            srv.kill()
        check(user == "hello there", "the typed message is not on the page: %r" % user)
        check(len(divs) == 2 and divs[1][0] == "assistant" and divs[1][1] == "done", "no finished answer: %s" % divs)
        check(int(divs[1][2]) >= 1 and divs[1][3], "the answer arrived in no streamed chunk: %s" % divs)
        check(not errors, "the page logged errors: %s" % errors[:3])
        print("PASS: typed a message, the answer streamed in %s chunks: %r" % (divs[1][2], divs[1][3][:60]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
