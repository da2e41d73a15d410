"""The same greedy request through `moe serve` and through `moe generate` gives the same tokens,
with 1 and with 8 concurrent streams, on fp32 golden fixtures (GQA with q/k norm, MLA, sliding
windows with sinks, shared experts). Usage: serve_greedy_test.py MOE_BINARY FIXTURE_DIR"""
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, post  # noqa: E402

FIXTURES = ["olmoe_base", "qwen3_moe_qknorm", "deepseek_v2_lite", "gpt_oss_base", "qwen2_moe_shared"]
N_NEW = 12


def prompts(vocab):
    return [[(13 * i + 7 * t + 3) % vocab for t in range(3 + 5 * i)] for i in range(8)]


def reference(moe, model, ids):
    r = subprocess.run([moe, "generate", "--model", model, "--ids", ",".join(map(str, ids)), "-n", str(N_NEW),
                        "--temperature", "0", "--ignore-eos", "--threads", "1"], capture_output=True, text=True,
                       timeout=60)
    check(r.returncode == 0, "moe generate: " + r.stderr)
    return json.loads(r.stdout)["ids"]


def served(port, ids):
    s, j = post(port, "/v1/completions", {"prompt": ids, "max_tokens": N_NEW, "temperature": 0,
                                          "ignore_eos": True, "return_tokens": True})
    check(s == 200, "completion: %d %s" % (s, j))
    return j["choices"][0]["tokens"]


def main():
    moe, fixtures = sys.argv[1], sys.argv[2]
    for name in FIXTURES:
        model = os.path.join(fixtures, name)
        vocab = json.load(open(os.path.join(model, "config.json")))["vocab_size"]
        ps = prompts(vocab)
        want = [reference(moe, model, p) for p in ps]
        # --chunk 4: the longer prompts are prefilled in pieces, beside the others' decode steps.
        srv = Server(moe, model, "--parallel", "8", "--chunk", "4", "--ctx", "64", "--threads", "1")
        try:
            got1 = [served(srv.port, p) for p in ps]  # one stream at a time
            got8 = [None] * len(ps)

            def run(i):
                got8[i] = served(srv.port, ps[i])
            ts = [threading.Thread(target=run, args=(i,)) for i in range(len(ps))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
        finally:
            srv.kill()
        for i in range(len(ps)):
            check(got1[i] == want[i], "%s prompt %d, 1 stream: %s != moe generate %s" % (name, i, got1[i], want[i]))
            check(got8[i] == want[i], "%s prompt %d, 8 streams: %s != moe generate %s" % (name, i, got8[i], want[i]))
        print("%s: %d prompts identical with 1 and 8 streams" % (name, len(ps)))
    print("PASS: server greedy output equals moe generate")


if __name__ == "__main__":
    main()
