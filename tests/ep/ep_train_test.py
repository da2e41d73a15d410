#!/usr/bin/env python3
"""Expert-parallel training equals one process.

`moe train` on 2 and 4 ranks (experts spread over the ranks, the global batch split over them)
must give the per-step losses of the one-process run with the same global batch to 1e-4
(relative) for 20 steps, and the validation loss after 100 steps to 1e-3, for softmax top-k with
the Switch aux loss, sigmoid scores with the aux-loss-free bias, expert choice, capacity with
token drops, and REINFORCE routing, whose per-token rewards and baseline are the global batch's
(resume across rank counts: ep_ckpt_test.py).
Usage: ep_train_test.py MOE_BINARY WORK_DIR
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ep_common import mpirun, read_metrics, rel, setup, write_corpus  # noqa: E402

MOE, WORK = sys.argv[1], sys.argv[2]
TIMEOUT = 120
CORPUS = os.path.join(WORK, "corpus.txt")
BASE = ["--data", CORPUS, "--vocab", "300", "--layers", "2", "--d-model", "32", "--heads", "2",
        "--experts", "8", "--top-k", "2", "--expert-ffn", "32", "--batch", "8", "--seq", "32",
        "--eval-windows", "16", "--threads", "1", "--save-every", "0"]
CASES = {
    "softmax_topk+aux": ["--router", "softmax_topk", "--aux-loss", "0.01", "--z-loss", "0.001"],
    "sigmoid_bias": ["--router", "sigmoid_bias", "--aux-loss", "0", "--bias-rate", "0.01"],
    "expert_choice": ["--router", "expert_choice"],
    "capacity 1.0": ["--router", "softmax_topk", "--capacity-factor", "1.0"],
    "reinforce": ["--router", "reinforce", "--renorm", "--rl-entropy", "0.01"],
}


def train(np, out, steps, extra, resume=False, stop_after=0):
    cmd = mpirun(np) + [MOE, "train"] + BASE + extra + ["--out", out, "--steps", str(steps),
                                                        "--eval-every", str(steps)]
    if resume:
        cmd.append("--resume")
    if stop_after:
        cmd += ["--stop-after", str(stop_after)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode not in (0, 130) or (p.returncode == 130) != bool(stop_after):
        sys.exit("FAIL: %s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))


metrics = read_metrics


def main():
    setup(WORK)
    write_corpus(CORPUS)
    failures = []
    for name, extra in CASES.items():
        runs = {}
        for np in (1, 2, 4):
            out = os.path.join(WORK, "%s-%d" % (name.replace(" ", "_").replace("+", "_"), np))
            train(np, out, 100, extra)
            runs[np] = metrics(out)
        ref_steps, ref_final = runs[1]
        for np in (2, 4):
            steps, final = runs[np]
            worst = max(rel(steps[s]["loss"], ref_steps[s]["loss"]) for s in range(1, 21))
            val = rel(final["val_loss"], ref_final["val_loss"])
            print("%-18s np=%d  steps 1-20: max rel. loss diff %.1e   val loss at 100: %.5f vs "
                  "%.5f (rel. %.1e)" % (name, np, worst, final["val_loss"], ref_final["val_loss"], val))
            if not worst <= 1e-4 or not val <= 1e-3:
                failures.append("%s np=%d" % (name, np))
    # Device-limited routing (top-1 device of 4): 4 ranks equal one process with 4 expert groups,
    # and the traffic a deduplicating dispatch would send falls below the unlimited run's.
    dl = CASES["softmax_topk+aux"] + ["--route-devices", "1"]
    one, four, free = (os.path.join(WORK, n) for n in ("rd-1", "rd-4", "rd-free"))
    train(1, one, 20, dl + ["--devices", "4"])
    train(4, four, 20, dl)
    train(4, free, 20, CASES["softmax_topk+aux"])
    (os_, _), (fs_, _), (us_, _) = metrics(one), metrics(four), metrics(free)
    worst = max(rel(fs_[s]["loss"], os_[s]["loss"]) for s in range(1, 21))
    lim = sum(fs_[s]["a2a_bytes_per_token_dedup"] for s in range(1, 21)) / 20
    unl = sum(us_[s]["a2a_bytes_per_token_dedup"] for s in range(1, 21)) / 20
    print("route-devices 1 of 4: max rel. loss diff vs one process %.1e; dedup all-to-all bytes "
          "per token %.0f vs %.0f unlimited" % (worst, lim, unl))
    if not worst <= 1e-4 or not lim < unl:
        failures.append("device-limited routing")
    if failures:
        sys.exit("FAIL: " + ", ".join(failures))
    print("ok")


main()
