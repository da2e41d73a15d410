#!/usr/bin/env python3
"""Expert-parallel inference equals one process.

For every golden fixture (the seven families), `moe logits` and greedy `moe generate` under
`mpirun -np 2` and `-np 4` must give what one process gives: logits within 1e-5 * max|logit|, and
the same continuation. Usage: ep_infer_test.py MOE_BINARY FIXTURES_DIR
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ep_common import mpirun, setup  # noqa: E402

MOE, FIX = sys.argv[1], sys.argv[2]
IDS = "1,2,3,4,5,6,7,8,9,10,11"
TIMEOUT = 60


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        sys.exit("FAIL: %s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    return p.stdout


def main():
    setup()
    models = sorted(d for d in os.listdir(FIX)
                    if os.path.isfile(os.path.join(FIX, d, "golden.safetensors")))
    if len(models) < 7:
        sys.exit("FAIL: expected the golden fixtures of seven families in %s, found %s" % (FIX, models))
    failures = []
    for m in models:
        path = os.path.join(FIX, m)
        lg = ["logits", "--model", path, "--ids", IDS, "--threads", "1"]
        gen = ["generate", "--model", path, "--ids", IDS, "-n", "6", "--threads", "1"]
        ref = json.loads(run([MOE] + lg))["logits"]
        ref_gen = json.loads(run([MOE] + gen))
        scale = max(abs(v) for row in ref for v in row)
        for np in (2, 4):
            got = json.loads(run(mpirun(np) + [MOE] + lg))["logits"]
            diff = max(abs(a - b) for ra, rb in zip(ref, got) for a, b in zip(ra, rb))
            ok = len(got) == len(ref) and diff <= 1e-5 * scale
            got_gen = json.loads(run(mpirun(np) + [MOE] + gen))
            same_gen = got_gen == ref_gen
            print("%-28s np=%d  max|dlogit|/max|logit| = %.2e  continuation %s" %
                  (m, np, diff / scale, "same" if same_gen else "DIFFERS"))
            if not ok or not same_gen:
                failures.append("%s np=%d" % (m, np))
    if failures:
        sys.exit("FAIL: " + ", ".join(failures))
    print("ok: %d fixtures, 2 and 4 ranks" % len(models))


main()
