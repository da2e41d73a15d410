#!/usr/bin/env bash
# Training parity at the default model size: `moe train` and an independent PyTorch trainer
# (tests/parity/torch_train_ref.py) start from the same initial weights (a `moe train --steps 0`
# export) and draw the same batches, and must agree at every one of 20 optimizer steps:
# |ce - ce_ref| <= 1e-4 and |grad_norm - grad_norm_ref| <= 1e-3.
#
# Model and loop: `moe train`'s defaults (4 layers, d_model 192, 6 heads, 8 experts, top-2,
# expert FFN 384, softmax top-k without renormalisation, aux 0.01, z 0.001, batch 16 x 128
# tokens, AdamW, warmup 30, clip 1) except the peak learning rate, 1e-3 instead of 3e-3. Why:
# float32 runs that differ only in summation order drift apart once a token's K-th and (K+1)-th
# router probabilities come within float32 resolution, and a larger step makes such near-ties
# come sooner. At lr 3e-3 every seed tried (1-4) had one between steps 14 and 19; at 1e-3 the
# runs agree to ~1e-6 in ce and ~3e-5 in grad norm for all 20 steps. Each step's smallest
# top-k probability gap (route_margin, from the PyTorch side) is printed, so a failure at a step
# with a gap below ~1e-7 reads as such a routing flip, and one at a step with a clear gap as a bug.
# Data: a generated synthetic corpus (deterministic, about 200 KB of text) tokenized by
# `moe train`. Fails (never skips) when no python3 can import torch and numpy
# (scripts/install_deps.sh installs python3-torch).
#
# Usage: tests/train_parity_test.sh [MOE_BINARY]
#   MOE_BINARY   default: build/bin/moe
#   PYTHON       the interpreter with torch (default: /usr/bin/python3, else python3)
#   PARITY_KEEP  keep the work folder (printed) instead of removing it
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
moe=${1:-$root/build/bin/moe}
if [[ ! -x "$moe" ]]; then
  echo "FAIL: $moe not found; build it first (cmake --build --preset release --target moe)"
  exit 1
fi
py=${PYTHON:-}
if [[ -z "$py" ]]; then
  for cand in /usr/bin/python3 python3; do
    if "$cand" -c "import torch, numpy" >/dev/null 2>&1; then py=$cand; break; fi
  done
fi
if [[ -z "$py" ]] || ! "$py" -c "import torch, numpy" >/dev/null 2>&1; then
  echo "FAIL: no python3 with torch and numpy (apt-get install -y python3-torch python3-numpy)"
  exit 1
fi

STEPS=20 SEED=1 BATCH=16 SEQ=128 LR=1e-3
work=$(mktemp -d)
if [[ -z "${PARITY_KEEP:-}" ]]; then trap 'rm -rf "$work"' EXIT; else echo "work folder: $work"; fi

# A deterministic synthetic corpus: 600 made-up words with Zipf frequencies, xorshift32 draws.
"$py" - "$work/corpus.txt" <<'PY'
import bisect, sys
x = 2463534242
def rnd():
    global x
    x ^= (x << 13) & 0xffffffff; x ^= x >> 17; x ^= (x << 5) & 0xffffffff
    return x
syl = ["ka", "lo", "mi", "ne", "ru", "ta", "sho", "vi", "den", "pa", "gri", "mo", "lu", "zen",
       "fa", "bor", "ti", "qua", "el", "ris"]
words = ["".join(syl[rnd() % len(syl)] for _ in range(1 + rnd() % 3)) for _ in range(600)]
cum, s = [], 0.0
for i in range(len(words)):
    s += 1.0 / (i + 1)
    cum.append(s)
out = []
for _ in range(40000):
    w = words[bisect.bisect_left(cum, rnd() / 2**32 * s)]
    out.append(w + (".\n" if rnd() % 13 == 0 else " "))
open(sys.argv[1], "w").write("".join(out))
PY

t0=$(date +%s)
# The initial weights and the tokenized data, then 20 steps of `moe train` from them.
"$moe" train --data "$work/corpus.txt" --out "$work/init" --steps 0 --seed $SEED --quiet \
  >"$work/init.log" 2>&1 || { echo "FAIL: moe train --steps 0:"; cat "$work/init.log"; exit 1; }
"$moe" train --data "$work/init/data" --init "$work/init" --out "$work/moe" --steps $STEPS \
  --seed $SEED --batch $BATCH --seq $SEQ --lr $LR --eval-every 0 --threads 2 --quiet \
  >"$work/moe.log" 2>&1 || { echo "FAIL: moe train:"; cat "$work/moe.log"; exit 1; }
t1=$(date +%s)
# The PyTorch trainer with `moe train`'s default model and loop (its own defaults differ).
OMP_NUM_THREADS=1 "$py" "$root/tests/parity/torch_train_ref.py" --data "$work/init/data" \
  --init "$work/init" --out "$work/ref.jsonl" --steps $STEPS --seed $SEED --layers 4 \
  --d-model 192 --heads 6 --experts 8 --top-k 2 --expert-ffn 384 --batch $BATCH --seq $SEQ \
  --lr $LR --warmup 30 --min-lr-frac 0.1 --wd 0.1 --clip 1 --aux 0.01 --z 0.001 \
  --eval-every 0 --eval-windows 2 --threads 1 >"$work/ref.log" 2>&1 ||
  { echo "FAIL: the PyTorch trainer:"; cat "$work/ref.log"; exit 1; }
t2=$(date +%s)
echo "moe train $((t1 - t0)) s, PyTorch trainer $((t2 - t1)) s"

"$py" - "$work/moe/metrics.jsonl" "$work/ref.jsonl" $STEPS <<'PY'
import json, sys
steps = int(sys.argv[3])
moe = {r["step"]: r for r in map(json.loads, open(sys.argv[1])) if "ce" in r and "step" in r}
ref = {r["step"]: r for r in map(json.loads, open(sys.argv[2]))}
bad = 0
print(" step  ce (moe)       |d ce|     grad_norm (moe)  |d gn|     route margin")
for s in range(1, steps + 1):
    if s not in moe or s not in ref:
        print(f"FAIL: step {s} missing ({'moe' if s not in moe else 'reference'})"); sys.exit(1)
    dce = abs(moe[s]["ce"] - ref[s]["ce"])
    dgn = abs(moe[s]["grad_norm"] - ref[s]["grad_norm"])
    flag = "" if dce <= 1e-4 and dgn <= 1e-3 else "  <-- over tolerance"
    bad += bool(flag)
    print(f" {s:4d}  {moe[s]['ce']:.8f}  {dce:.2e}  {moe[s]['grad_norm']:.8f}       {dgn:.2e}"
          f"  {ref[s].get('route_margin', float('nan')):.1e}{flag}")
if bad:
    print(f"FAIL: {bad} of {steps} steps differ by more than 1e-4 in ce or 1e-3 in grad norm"); sys.exit(1)
print(f"PASS: {steps} steps match (ce to 1e-4, grad norm to 1e-3)")
PY
