#!/usr/bin/env python3
"""Expert-parallel checkpoints, --ep groups and the communication balance loss.

1. Resume across rank counts: a run stopped on 4 ranks leaves one Hugging Face sharded
   checkpoint (model-0000r-of-00004.safetensors, model.safetensors.index.json, and the moments in
   optimizer-0000r-of-00004.safetensors), each shard holding its rank's experts; resumed on 2
   ranks (2 shards) and finished on 1, the run equals the uninterrupted one-process run (per-step
   losses and validation to 1e-4 relative). Each rank holds 1/N of the expert parameters.
2. --ep 2 on 4 ranks (two expert-parallel groups, data parallelism across them) equals one
   process; its final model is a 2-shard checkpoint whose weight map names exactly the tensors of
   the one-process model, and one process loads it: logits within 1e-4 * max|logit| of the
   one-process model's.
3. DeepSeek-V2's communication balance loss on 2 ranks equals one process with --devices 2.
4. Device-limited routing at inference: `moe logits --route-devices 1` on 4 ranks equals one
   process with --devices 4 (to 1e-5 * max|logit|), and differs from unlimited routing.
Usage: ep_ckpt_test.py MOE_BINARY WORK_DIR
"""
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ep_common import mpirun, read_metrics, rel, setup, write_corpus  # noqa: E402

MOE, WORK = sys.argv[1], sys.argv[2]
TIMEOUT = 120
CORPUS = os.path.join(WORK, "corpus.txt")
STEPS = 12
# 2 MoE layers x 8 experts x 3 matrices of 32 x 32: 49152 expert parameters.
BASE = ["--data", CORPUS, "--vocab", "300", "--layers", "2", "--d-model", "32", "--heads", "2",
        "--experts", "8", "--top-k", "2", "--expert-ffn", "32", "--batch", "8", "--seq", "16",
        "--eval-windows", "8", "--threads", "1", "--save-every", "0", "--router", "softmax_topk",
        "--aux-loss", "0.01", "--z-loss", "0.001", "--eval-every", str(STEPS)]
EXPERT_PARAMS = 2 * 8 * 3 * 32 * 32
failures = []


def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def train(np, out, extra, stop_after=0, resume=False):
    cmd = mpirun(np) + [MOE, "train"] + BASE + extra + ["--out", out, "--steps", str(STEPS)]
    if resume:
        cmd.append("--resume")
    if stop_after:
        cmd += ["--stop-after", str(stop_after)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != (130 if stop_after else 0):
        sys.exit("FAIL: %s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))


def st_names(path):
    """The tensor names in a safetensors file's header."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return {k for k in json.loads(f.read(n)) if k != "__metadata__"}


def shard_layout(ckpt, n, optimizer=True):
    """Checks a model (with optimizer: a checkpoint) folder written by n ranks; returns its
    weight map."""
    names = ["model-%05d-of-%05d.safetensors" % (r + 1, n) for r in range(n)]
    idx = json.load(open(os.path.join(ckpt, "model.safetensors.index.json")))
    wm = idx["weight_map"]
    check(sorted(set(wm.values())) == names, "%d ranks: the weight map names the %d shards" % (n, n))
    for r, fn in enumerate(names):
        got = st_names(os.path.join(ckpt, fn))
        want = {t for t, f in wm.items() if f == fn}
        experts = {int(t.split(".experts.")[1].split(".")[0]) for t in got if ".experts." in t}
        check(got == want and experts == set(range(8 * r // n, 8 * (r + 1) // n)),
              "%d ranks: shard %d holds experts %s and what the index says" % (n, r + 1, sorted(experts)))
    if not optimizer:
        return wm
    st = json.load(open(os.path.join(ckpt, "trainer_state.json")))
    opt = ["optimizer-%05d-of-%05d.safetensors" % (r + 1, n) for r in range(n)]
    check(st.get("optimizer_files") == opt and not os.path.exists(os.path.join(ckpt, "model.safetensors")),
          "%d ranks: trainer_state.json lists the %d optimizer shards" % (n, n))
    for r, fn in enumerate(opt):
        moments = st_names(os.path.join(ckpt, fn))
        check(moments == {p + t for t in st_names(os.path.join(ckpt, names[r]))
                          for p in ("exp_avg.", "exp_avg_sq.")},
              "%d ranks: optimizer shard %d holds the moments of model shard %d" % (n, r + 1, r + 1))
    return wm


def same_losses(a, b, what, steps=STEPS):
    (sa, fa), (sb, fb) = read_metrics(a), read_metrics(b)
    worst = max(rel(sa[s]["loss"], sb[s]["loss"]) for s in range(1, steps + 1))
    val = rel(fa["val_loss"], fb["val_loss"])
    check(sorted(sa) == list(range(1, steps + 1)) and worst <= 1e-4 and val <= 1e-4,
          "%s: max rel. loss diff over %d steps %.1e, val %.6f vs %.6f" %
          (what, steps, worst, fa["val_loss"], fb["val_loss"]))
    return sa


def logits(model, np=1, extra=()):
    p = subprocess.run(mpirun(np) + [MOE, "logits", "--model", model, "--ids", "1,2,3,4,5,6,7,8",
                                     "--threads", "1"] + list(extra),
                       capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        sys.exit("FAIL: moe logits on %s: %s" % (model, p.stderr[-2000:]))
    return json.loads(p.stdout)["logits"]


def rel_diff(got, ref):
    """max |got - ref| / max |ref| over logit matrices."""
    scale = max(abs(v) for row in ref for v in row)
    return max(abs(a - b) for ra, rb in zip(ref, got) for a, b in zip(ra, rb)) / scale


def main():
    setup(WORK)
    write_corpus(CORPUS)
    whole = os.path.join(WORK, "whole")
    train(1, whole, [])
    # 1. 4 ranks -> 2 ranks -> 1 rank.
    part = os.path.join(WORK, "parts")
    train(4, part, [], stop_after=4)
    shard_layout(os.path.join(part, "checkpoint"), 4)
    held = read_metrics(part)[0][4]["expert_params_per_rank"]
    check(held == [EXPERT_PARAMS // 4] * 4, "4 ranks hold %s expert parameters (1/4 each)" % held)
    train(2, part, [], stop_after=4, resume=True)
    shard_layout(os.path.join(part, "checkpoint"), 2)
    train(1, part, [], resume=True)
    same_losses(part, whole, "resume 4 -> 2 -> 1 ranks")
    # 2. Two expert-parallel groups of 2.
    ep2 = os.path.join(WORK, "ep2")
    train(4, ep2, ["--ep", "2"])
    steps = same_losses(ep2, whole, "4 ranks --ep 2")
    check(steps[1]["expert_params_per_rank"] == [EXPERT_PARAMS // 2] * 4,
          "--ep 2: each rank holds half the expert parameters")
    wm = shard_layout(ep2, 2, optimizer=False)
    check(set(wm) == st_names(os.path.join(whole, "model.safetensors")),
          "the 2-shard model names exactly the one-process model's tensors")
    ref = logits(whole)
    check(rel_diff(logits(ep2), ref) <= 1e-4, "one process loads the 2-shard model: "
          "max|dlogit|/max|logit| %.1e" % rel_diff(logits(ep2), ref))
    # 3. The communication balance loss over the real ranks.
    c1, c2 = os.path.join(WORK, "comm-1"), os.path.join(WORK, "comm-2")
    train(1, c1, ["--comm-loss", "0.02", "--devices", "2"])
    train(2, c2, ["--comm-loss", "0.02"])
    s1 = same_losses(c2, c1, "--comm-loss on 2 ranks vs --devices 2")
    check(all(s1[s]["comm"] > 0 for s in s1), "the communication loss is reported (step 1: %.5f)" %
          s1[1]["comm"])
    # 4. Device-limited routing at inference over the real ranks.
    one = logits(whole, 1, ["--route-devices", "1", "--devices", "4"])
    four = logits(whole, 4, ["--route-devices", "1"])
    check(rel_diff(four, one) <= 1e-5 and rel_diff(one, ref) > 1e-3,
          "--route-devices 1 of 4 ranks vs one process: %.1e; vs unlimited routing: %.1e" %
          (rel_diff(four, one), rel_diff(one, ref)))
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("ok")


main()
