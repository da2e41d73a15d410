"""`moe serve` through curl: chat (plain and streamed), completions, tokenize / detokenize /
apply-template, metrics, and every error status. Usage: serve_curl_test.py MOE_BINARY"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, fail, make_chat_model, sse_events, temp_dir  # noqa: E402


def curl(port, path, body=None, headers=(), method=None, data_file=None, timeout=60):
    """(status, body text) of one curl call."""
    args = ["curl", "-sS", "-N", "--max-time", str(timeout), "-w", "\n%{http_code}"]
    for h in headers:
        args += ["-H", h]
    if body is not None or data_file:
        args += ["-H", "Content-Type: application/json", "--data-binary",
                 "@" + data_file if data_file else (body if isinstance(body, str) else json.dumps(body))]
    if method:
        args += ["-X", method]
    r = subprocess.run(args + ["http://127.0.0.1:%d%s" % (port, path)], capture_output=True, text=True,
                       timeout=timeout + 10)
    check(r.returncode == 0, "curl %s failed: %s" % (path, r.stderr))
    text, _, code = r.stdout.rpartition("\n")
    return int(code), text


def jcurl(port, path, body=None, **kw):
    status, text = curl(port, path, body, **kw)
    try:
        return status, json.loads(text)
    except ValueError:
        fail("%s: not JSON (status %d): %r" % (path, status, text[:200]))


def expect_error(port, path, body, status, code=None, **kw):
    got, j = jcurl(port, path, body, **kw)
    check(got == status, "%s %s: status %d, want %d: %s" % (path, str(body)[:80], got, status, j))
    e = j.get("error") if isinstance(j, dict) else None
    check(isinstance(e, dict) and isinstance(e.get("message"), str) and e.get("type"),
          "%s: not an OpenAI error object: %s" % (path, j))
    if code:
        check(e.get("code") == code, "%s: error code %s, want %s" % (path, e.get("code"), code))


MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hello there"}]}]


def chat_tests(port, model_id):
    s, j = jcurl(port, "/v1/chat/completions", {"model": model_id, "messages": MSGS, "max_tokens": 6,
                                                "temperature": 0, "ignore_eos": True})
    check(s == 200, "chat: %d %s" % (s, j))
    check(j["object"] == "chat.completion" and j["choices"][0]["message"]["role"] == "assistant", str(j))
    u = j["usage"]
    check(u["completion_tokens"] == 6 and u["total_tokens"] == u["prompt_tokens"] + 6, "usage: %s" % u)
    check(j["choices"][0]["finish_reason"] == "length", str(j))
    plain = j["choices"][0]["message"]["content"]
    check(len(plain) > 0, "empty chat reply")
    # Streamed: the same greedy reply, role first, a usage chunk, then [DONE].
    s, text = curl(port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 6, "temperature": 0,
                                                  "ignore_eos": True, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    check(s == 200, "stream: %d" % s)
    ev = sse_events(text)
    check(ev[-1] == "[DONE]", "stream does not end in [DONE]: %r" % ev[-3:])
    chunks = [json.loads(e) for e in ev[:-1]]
    check(all(c["object"] == "chat.completion.chunk" for c in chunks), "chunk objects")
    check(chunks[0]["choices"][0]["delta"].get("role") == "assistant", "first chunk has no role")
    check(chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6, "usage chunk: %s" % chunks[-1])
    check(chunks[-2]["choices"][0]["finish_reason"] == "length", "finish chunk: %s" % chunks[-2])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    check(streamed == plain, "streamed %r != plain %r" % (streamed, plain))
    # Stop string: the reply is cut before its first occurrence, finish_reason stop.
    if len(plain) >= 3:
        stop = plain[1:3]
        s, j = jcurl(port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 6, "temperature": 0,
                                                    "ignore_eos": True, "stop": [stop, "zzzz"]})
        want = plain[:plain.find(stop)]
        check(j["choices"][0]["message"]["content"] == want and j["choices"][0]["finish_reason"] == "stop",
              "stop %r: %r want %r" % (stop, j["choices"][0], want))
    # Prefix caching: the same conversation again reuses the finished request's KV cache.
    s, j = jcurl(port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 6, "temperature": 0, "ignore_eos": True})
    cached = j["usage"]["prompt_tokens_details"]["cached_tokens"]
    check(cached == j["usage"]["prompt_tokens"] - 1, "prefix cache: %d of %d prompt tokens reused" % (cached, j["usage"]["prompt_tokens"]))
    check(j["choices"][0]["message"]["content"] == plain, "a reply from the prefix cache differs")
    # Logprobs with alternatives.
    s, j = jcurl(port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 3, "temperature": 0,
                                                "ignore_eos": True, "logprobs": True, "top_logprobs": 2})
    lp = j["choices"][0]["logprobs"]["content"]
    check(len(lp) == 3 and all(len(x["top_logprobs"]) == 2 and x["logprob"] <= 0 for x in lp), "logprobs: %s" % lp)
    check(all(abs(x["logprob"] - x["top_logprobs"][0]["logprob"]) < 1e-5 for x in lp), "greedy logprob not the top one")


def other_endpoint_tests(port, model_id):
    s, j = jcurl(port, "/v1/completions", {"prompt": "hello", "max_tokens": 4, "temperature": 0.7,
                                           "seed": 3, "ignore_eos": True, "logprobs": 2})
    check(s == 200 and j["object"] == "text_completion", "completions: %s" % j)
    check(len(j["choices"][0]["logprobs"]["tokens"]) == 4 and j["usage"]["completion_tokens"] == 4, str(j))
    s, j2 = jcurl(port, "/v1/completions", {"prompt": "hello", "max_tokens": 4, "temperature": 0.7,
                                            "seed": 3, "ignore_eos": True})
    check(j2["choices"][0]["text"] == j["choices"][0]["text"], "the same seed gave another text")
    s, text = curl(port, "/v1/completions", {"prompt": "hello", "max_tokens": 3, "stream": True, "ignore_eos": True})
    ev = sse_events(text)
    check(ev[-1] == "[DONE]" and json.loads(ev[-2])["choices"][0]["finish_reason"] == "length", "completion stream %r" % ev)
    s, j = jcurl(port, "/tokenize", {"content": "hello there"})
    check(s == 200 and len(j["tokens"]) > 0, "tokenize: %s" % j)
    s, d = jcurl(port, "/detokenize", {"tokens": j["tokens"]})
    check(d["content"] == "hello there", "detokenize: %s" % d)
    s, t = jcurl(port, "/apply-template", {"messages": [{"role": "user", "content": "hi"}]})
    check(t["prompt"] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "apply-template: %r" % t)
    s, j = jcurl(port, "/v1/models")
    check(j["data"][0]["id"] == model_id, "models: %s" % j)
    s, j = jcurl(port, "/health")
    check(s == 200 and j["status"] == "ok", "health")
    s, m = curl(port, "/metrics")
    check(s == 200, "metrics status")
    for name in ["moe_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}", "moe_generated_tokens_total",
                 "moe_generated_tokens_per_second", "moe_queue_depth", "moe_busy_sequences",
                 "moe_expert_routed_tokens_total{layer=\"0\",expert=\"3\"}", "moe_expert_load_max_over_mean{layer=\"0\"}",
                 "moe_expert_bytes_read_total"]:
        check(name in m, "metrics lack %s" % name)
    vals = {}
    for line in m.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            vals[k] = float(v)
    routed = sum(v for k, v in vals.items() if k.startswith("moe_expert_routed_tokens_total"))
    check(routed == 2 * vals["moe_forward_tokens_total"], "routed %g != top-2 x %g tokens" % (routed, vals["moe_forward_tokens_total"]))
    check(vals["moe_generated_tokens_total"] >= 6 + 6 + 3 + 4 + 4 + 3, "generated tokens %g" % vals["moe_generated_tokens_total"])


def error_tests(port, model_id, work):
    ep = "/v1/chat/completions"
    expect_error(port, ep, "{not json", 400, "invalid_json")
    expect_error(port, ep, {"max_tokens": 3}, 400, "missing_field")
    expect_error(port, ep, {"messages": "hi"}, 400)
    expect_error(port, ep, {"messages": MSGS, "temperature": "hot"}, 400)
    expect_error(port, ep, {"messages": MSGS, "n": 2}, 400)
    expect_error(port, ep, {"messages": MSGS, "stop": "x" * 300}, 400)
    expect_error(port, ep, {"messages": MSGS, "stop": [1]}, 400)
    expect_error(port, ep, {"messages": [{"role": "wizard", "content": "x"}]}, 400)
    expect_error(port, ep, {"messages": MSGS, "max_tokens": 100000}, 400, "context_length_exceeded")
    expect_error(port, "/v1/completions", {"prompt": [1, 2, 999999]}, 400)
    expect_error(port, ep, {"model": "gpt-nonexistent", "messages": MSGS}, 404, "model_not_found")
    expect_error(port, "/v1/nothing", {"x": 1}, 404)
    expect_error(port, "/tokenize", {"content": 3}, 400)
    big = os.path.join(work, "big.json")
    with open(big, "w") as f:
        f.write('{"prompt": "' + "a" * (1 << 20) + '"}')
    expect_error(port, "/v1/completions", None, 413, data_file=big)


def template_cli_test(moe, model, port, work):
    """`moe template` prints what /apply-template returns; a bad messages file is a one-line error."""
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    path = os.path.join(work, "m.json")
    with open(path, "w") as f:
        json.dump(msgs, f)
    r = subprocess.run([moe, "template", "--tokenizer-config", os.path.join(model, "tokenizer_config.json"),
                        "--messages", path, "--add-generation-prompt"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "moe template: " + r.stderr)
    s, t = jcurl(port, "/apply-template", {"messages": msgs})
    check(json.loads(r.stdout)["text"] == t["prompt"], "moe template %r != /apply-template %r" % (r.stdout, t))
    with open(path, "w") as f:
        f.write('[{"content": "no role"}]')
    r = subprocess.run([moe, "template", "--tokenizer-config", os.path.join(model, "tokenizer_config.json"),
                        "--messages", path], capture_output=True, text=True, timeout=30)
    check(r.returncode != 0 and "m.json" in r.stderr and "role" in r.stderr and r.stderr.count("\n") == 1,
          "a bad messages file: rc %d %r" % (r.returncode, r.stderr))


def auth_queue_timeout_tests(moe, model):
    srv = Server(moe, model, "--api-key", "sekrit", "--parallel", "1", "--max-queue", "0", "--threads", "1")
    try:
        p = srv.port
        body = {"messages": MSGS, "max_tokens": 2}
        expect_error(p, "/v1/chat/completions", body, 401, "invalid_api_key")
        expect_error(p, "/v1/chat/completions", body, 401, headers=["Authorization: Bearer wrong"])
        s, j = jcurl(p, "/v1/chat/completions", body, headers=["Authorization: Bearer sekrit"])
        check(s == 200, "authorised request: %d %s" % (s, j))
        s, _ = curl(p, "/health")
        check(s == 200, "/health needs no key")
        # Queue full: requests arriving together at one slot and no queue; the first holds the
        # slot for 1500 tokens, the others must be refused with 429.
        long = json.dumps({"messages": MSGS, "max_tokens": 1500, "ignore_eos": True})
        args = ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", "-H", "Authorization: Bearer sekrit",
                "-H", "Content-Type: application/json", "--data-binary", long,
                "http://127.0.0.1:%d/v1/chat/completions" % p]
        procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(6)]
        outs = [pr.communicate(timeout=90)[0].rpartition("\n") for pr in procs]
        codes = sorted(code for _, _, code in outs)
        check(codes.count("200") >= 1 and codes.count("429") >= 1 and set(codes) <= {"200", "429"},
              "6 requests at once on 1 slot without a queue: %s" % codes)
        refused = [json.loads(text) for text, _, code in outs if code == "429"]
        check(all(r["error"]["code"] == "queue_full" and r["error"]["type"] for r in refused), "429 bodies: %s" % refused)
        s, j = jcurl(p, "/v1/chat/completions", body, headers=["Authorization: Bearer sekrit"])
        check(s == 200, "after the queue test: %d %s" % (s, j))
    finally:
        srv.kill()
    srv = Server(moe, model, "--timeout", "0.001", "--threads", "1")
    try:
        expect_error(srv.port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 1500, "ignore_eos": True}, 504, "timeout")
    finally:
        srv.kill()


def main():
    moe = sys.argv[1]
    check(shutil.which("curl") is not None, "curl is not installed (apt-get install -y curl)")
    work = temp_dir()
    try:
        model = make_chat_model(moe, work)
        srv = Server(moe, model, "--parallel", "2", "--threads", "1")
        try:
            model_id = os.path.basename(model)
            chat_tests(srv.port, model_id)
            other_endpoint_tests(srv.port, model_id)
            error_tests(srv.port, model_id, work)
            template_cli_test(moe, model, srv.port, work)
            s, _ = curl(srv.port, "/health")
            check(s == 200, "server not healthy after the error cases")
        finally:
            srv.kill()
        auth_queue_timeout_tests(moe, model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS: moe serve through curl")


if __name__ == "__main__":
    main()
