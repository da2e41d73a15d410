#!/usr/bin/env python3
"""Faults in an expert-parallel run.

1. A rank killed mid-training (SIGKILL) ends the whole job within 30 s with a non-zero exit and a
   message naming the rank; the last checkpoint stays loadable and training resumes from it.
2. Ranks started with different flags (an MPMD launch) fail at start-up with a clear error.
Usage: ep_fault_test.py MOE_BINARY WORK_DIR
"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ep_common import mpirun, setup  # noqa: E402
import time

MOE, WORK = sys.argv[1], sys.argv[2]
MPI = ["mpirun", "--oversubscribe", "--bind-to", "none"]


def fail(msg):
    sys.exit("FAIL: " + msg)


def args(out, steps, seed="1"):
    return [MOE, "train", "--data", os.path.join(WORK, "corpus.txt"), "--out", out, "--vocab",
            "300", "--layers", "2", "--d-model", "32", "--heads", "2", "--experts", "4",
            "--top-k", "2", "--expert-ffn", "32", "--batch", "4", "--seq", "32", "--steps",
            str(steps), "--eval-every", "0", "--save-every", "5", "--threads", "1", "--seed", seed]


def rank_pids(rank):
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
            exe = os.readlink("/proc/%s/exe" % pid)
        except OSError:
            continue
        if os.path.basename(exe) == "moe" and ("OMPI_COMM_WORLD_RANK=%d" % rank).encode() in env \
                and ("MOE_FAULT_TEST=" + WORK).encode() in env:
            pids.append(int(pid))
    return pids


def kill_one_rank():
    out = os.path.join(WORK, "killed")
    env = dict(os.environ, MOE_FAULT_TEST=WORK)
    p = subprocess.Popen(MPI + ["-np", "2"] + args(out, 1000000), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    state = os.path.join(out, "checkpoint", "trainer_state.json")
    deadline = time.time() + 60
    while not os.path.exists(state) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    if not os.path.exists(state):
        p.kill()
        fail("no checkpoint appeared within 60 s: %s" % p.communicate()[1][-2000:])
    time.sleep(0.5)
    victims = rank_pids(1)
    if not victims:
        p.kill()
        fail("could not find rank 1's process")
    t0 = time.time()
    for v in victims:
        os.kill(v, signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        fail("the job still ran 30 s after rank 1 was killed")
    dt = time.time() - t0
    print("rank 1 killed: mpirun exited %d after %.1f s" % (p.returncode, dt))
    if p.returncode == 0:
        fail("the job exited 0 after a rank was killed")
    if "rank 1" not in err:
        fail("the error does not name rank 1: %s" % err[-2000:])
    # The checkpoint left behind still loads: one process resumes from it and trains 1 step.
    step = int(__import__("json").load(open(state))["step"])
    r = subprocess.run(args(out, step + 1) + ["--resume"], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        fail("resuming from the last checkpoint failed: %s" % r.stderr[-2000:])
    print("the checkpoint of step %d resumed cleanly" % step)


def mismatched_flags():
    out = os.path.join(WORK, "mpmd")
    cmd = MPI + ["-np", "1"] + args(out, 3, "1") + [":", "-np", "1"] + args(out, 3, "2")
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    print("mismatched flags: exit %d after %.1f s" % (r.returncode, time.time() - t0))
    if r.returncode == 0:
        fail("ranks with different flags ran")
    if "ranks disagree on the command line" not in r.stderr:
        fail("no clear error for mismatched flags: %s" % r.stderr[-2000:])


def main():
    setup(WORK)
    with open(os.path.join(WORK, "corpus.txt"), "w") as f:
        f.write("\n".join("token %d goes to expert %d of %d." % (i, i % 4, 4) for i in range(3000)))
    kill_one_rank()
    mismatched_flags()
    print("ok")


main()
