#!/usr/bin/env python3
"""Each expert-parallel rank holds about 1/N of the expert weights.

A model with 12 MiB of expert weights (2 MoE layers x 8 experts of 0.75 MiB) is trained for one
step; `moe inspect --data` then routes 512 tokens on 2 and on 4 ranks and reports, per rank, the
expert bytes resident in that process (its page table). Every rank must hold between 1/(2N) and
1/N + 10% of them, and all ranks together at least 90% (the data reaches every expert).
Usage: ep_memory_test.py MOE_BINARY WORK_DIR
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ep_common import mpirun, setup  # noqa: E402

MOE, WORK = sys.argv[1], sys.argv[2]


def main():
    setup(WORK)
    corpus = os.path.join(WORK, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join("sentence %d sends token %d to expert %d." % (i, i * 7 % 97, i % 8)
                          for i in range(4000)))
    model = os.path.join(WORK, "model")
    subprocess.run([MOE, "train", "--data", corpus, "--out", model, "--steps", "1", "--vocab", "300",
                    "--layers", "2", "--d-model", "128", "--heads", "2", "--experts", "8",
                    "--top-k", "2", "--expert-ffn", "512", "--batch", "2", "--seq", "32",
                    "--threads", "1", "--quiet"], check=True, capture_output=True, timeout=120)
    failures = []
    for np in (2, 4):
        p = subprocess.run(mpirun(np) + [MOE, "inspect", "--model", model, "--data",
                                         os.path.join(model, "data"), "--tokens", "512", "--json"],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            sys.exit("FAIL: inspect on %d ranks exited %d: %s" % (np, p.returncode, p.stderr[-2000:]))
        ep = json.loads(p.stdout)["expert_parallel"]
        shares = [r["resident_share"] for r in ep["per_rank"]]
        print("%d ranks: %.2f MiB of experts; resident share per rank: %s" %
              (np, ep["expert_bytes"] / 2**20, ", ".join("%.3f" % s for s in shares)))
        if ep["ranks"] != np or len(shares) != np:
            failures.append("%d ranks: wrong rank count" % np)
        if any(not (0.5 / np <= s <= 1.0 / np + 0.1) for s in shares) or sum(shares) < 0.9:
            failures.append("%d ranks: shares %s" % (np, shares))
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("ok")


main()
