"""Client side of bench/serve_bench.sh: runs `moe serve` on a checkpoint, streams N concurrent
completions at each concurrency, and reports aggregate decode tokens/s, time to first token and
expert bytes per generated token against the bandwidth limit. --report renders the Markdown."""
import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
import http.client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "serve"))
from serve_util import Server, request  # noqa: E402


def metrics(port):
    _, _, raw = request(port, "GET", "/metrics")
    out = {}
    for line in raw.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            k, v = line.split()
            out[k] = float(v)
    return out


def stream(port, prompt, tokens, rec):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True})
    rec["send"] = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    n, buf = 0, b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: {"):
                continue
            j = json.loads(ev[6:])
            if j.get("choices") and j["choices"][0].get("finish_reason") is None:
                n += 1
                rec.setdefault("times", []).append(time.perf_counter())
    rec["first"] = rec["times"][0]
    rec["end"] = rec["times"][-1]
    rec["n"] = n
    c.close()


def one_run(port, n_streams, tokens, plen, vocab, rng):
    recs = [{} for _ in range(n_streams)]
    prompts = [[rng.randrange(vocab) for _ in range(plen)] for _ in range(n_streams)]
    m0 = metrics(port)
    ts = [threading.Thread(target=stream, args=(port, prompts[i], tokens, recs[i])) for i in range(n_streams)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    m1 = metrics(port)
    d = {k: m1[k] - m0.get(k, 0) for k in m1}
    assert all(r["n"] == tokens for r in recs), "a stream ended early: %s" % [r["n"] for r in recs]
    # Steady state: the window in which every stream had its first token and none had ended; the
    # tokens all streams received in it, over its length.
    lo, hi = max(r["first"] for r in recs), min(r["end"] for r in recs)
    in_window = sum(sum(1 for t in r["times"] if lo < t <= hi) for r in recs)
    return {
        "decode_tok_s": in_window / (hi - lo),
        "window_s": hi - lo,
        "ttft_ms": statistics.median((r["first"] - r["send"]) * 1e3 for r in recs),
        "ttft_ms_max": max((r["first"] - r["send"]) * 1e3 for r in recs),
        "expert_bytes_per_token": d["moe_expert_bytes_read_decode_total"] / max(d["moe_decode_step_tokens_total"], 1),
        "tokens_per_step": d["moe_forward_tokens_total"] / max(d["moe_forward_steps_total"], 1),
    }


def bench(a):
    dec = json.load(open(a.decode_json))
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    bw = dec["machine"]["dram_read_gbps"] * 1e9
    b = dec["bytes_per_token"]
    shared_bytes = b["total"] - b["experts"] - b["kv_cache"]  # read once per step, whatever its tokens
    streams = [int(x) for x in a.streams.split()]
    srv = Server(a.moe, a.model, "--parallel", str(max(streams)), "--ctx", str(a.prompt + a.tokens + 8),
                 "--threads", str(a.threads))
    rng = random.Random(1)
    rows = []
    try:
        one_run(srv.port, 1, 4, a.prompt, cfg["vocab_size"], rng)  # warm-up: touch the weights
        for n in streams:
            runs = [one_run(srv.port, n, a.tokens, a.prompt, cfg["vocab_size"], rng) for _ in range(a.reps)]
            row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            per_tok = shared_bytes / n + b["kv_cache"] + row["expert_bytes_per_token"]
            row.update(streams=n, bytes_per_token=per_tok, limit_tok_s=bw / per_tok, reps=a.reps)
            row["frac_of_limit"] = row["decode_tok_s"] / row["limit_tok_s"]
            rows.append(row)
            print("serve_bench: %2d streams: %.2f tokens/s, TTFT %.0f ms, %.1f MiB experts/token, limit %.1f tokens/s"
                  % (n, row["decode_tok_s"], row["ttft_ms"], row["expert_bytes_per_token"] / 2**20, row["limit_tok_s"]),
                  file=sys.stderr)
    finally:
        srv.kill()
    out = {"model": os.path.basename(a.model.rstrip("/")), "machine": dec["machine"], "tokens": a.tokens,
           "prompt": a.prompt, "single_stream_bench_decode_tok_s": dec["tokens_per_s"] if "tokens_per_s" in dec else None,
           "shared_bytes_per_step": shared_bytes, "kv_bytes_per_token": b["kv_cache"],
           "load_end": os.getloadavg()[0], "rows": rows}
    tmp = a.out + ".tmp"
    json.dump(out, open(tmp, "w"), indent=1)
    os.replace(tmp, a.out)


def report(paths):
    print("# moe serve: continuous batching\n")
    print("Written by `bench/serve_bench.sh` (bench/serve_bench_client.py). Each row: N concurrent streaming "
          "completions of random prompts, greedy, `ignore_eos`, medians of the repetitions. *Decode tokens/s*: "
          "tokens all streams received while every stream was decoding (from the last stream's first token "
          "to the first stream's last), over that time. *TTFT*: median time from sending to the first token. *Expert bytes "
          "per token*: routed-expert bytes the server's pure decode steps read (each distinct expert once per "
          "step), per token. *Limit*: measured DRAM read bandwidth / (non-expert weights once per step / N + KV "
          "cache + expert bytes per token).\n")
    for p in paths:
        d = json.load(open(p))
        m = d["machine"]
        print("## %s\n" % d["model"])
        print("Machine: %s, %d CPUs, %d threads, DRAM read %.1f GB/s (measured by `moe bench decode` in the same run), "
              "%s, load average %.2f at the end. Prompt %d tokens, %d generated per stream.\n"
              % (m["cpu"], m["cpus"], m["threads"], m["dram_read_gbps"], m["date"], d["load_end"], d["prompt"], d["tokens"]))
        print("| streams | decode tokens/s | vs 1 stream | TTFT median (max) | tokens per step | expert MiB/token | limit tokens/s | of limit |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        base = d["rows"][0]["decode_tok_s"]
        for r in d["rows"]:
            print("| %d | %.2f | %.2fx | %.0f (%.0f) ms | %.1f | %.1f | %.1f | %.0f%% |" %
                  (r["streams"], r["decode_tok_s"], r["decode_tok_s"] / base, r["ttft_ms"], r["ttft_ms_max"],
                   r["tokens_per_step"], r["expert_bytes_per_token"] / 2**20, r["limit_tok_s"], 100 * r["frac_of_limit"]))
        print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", nargs="*")
    ap.add_argument("--moe")
    ap.add_argument("--model")
    ap.add_argument("--threads", default="0")
    ap.add_argument("--streams", default="1 2 4 8 16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-json")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.report:
        report(a.report)
    else:
        bench(a)


if __name__ == "__main__":
    main()
