#!/usr/bin/env bash
# `moe serve` under concurrent streams: aggregate decode tokens/s and time to first token at 1, 2,
# 4, 8 and 16 streams, and the routed-expert bytes each generated token cost, on random-weight
# checkpoints from `moe init`; writes bench/results/serve.md and serve.json.
#
#   bench/serve_bench.sh                                 # OLMoE-1B-7B q4_0
#   MODELS="olmoe-1b-7b qwen3-30b-a3b" bench/serve_bench.sh
#
# The same server (--parallel 16) serves every concurrency; each stream sends a different prompt
# of PROMPT token ids and decodes TOKENS tokens (ignore_eos, greedy), REPS times per concurrency
# (medians reported). The bandwidth limit per concurrency comes from `moe bench decode`'s measured
# DRAM bandwidth and per-token bytes, with the routed-expert bytes replaced by those the server's
# batched steps actually read (its /metrics counter moe_expert_bytes_read_total).
#
# serve.md is rewritten from the JSON; its hand-written analysis section must be redone after a run.
#
# Environment: MOE (default build/bin/moe), THREADS (0 = all cores), CKPT_DIR (default
# runs/bench_ckpt, git-ignored; checkpoints are kept), STREAMS, TOKENS (64), PROMPT (32), REPS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-build/bin/moe}
THREADS=${THREADS:-0}
CKPT_DIR=${CKPT_DIR:-runs/bench_ckpt}
MODELS=${MODELS:-olmoe-1b-7b}
STREAMS=${STREAMS:-"1 2 4 8 16"}
TOKENS=${TOKENS:-64}
PROMPT=${PROMPT:-32}
REPS=${REPS:-3}
RESULTS=bench/results
[ -x "$MOE" ] || { echo "serve_bench: $MOE not found; build it first" >&2; exit 1; }
mkdir -p "$RESULTS" "$CKPT_DIR"
jsons=()
for model in $MODELS; do
  dir="$CKPT_DIR/$model-q4_0"
  if [ ! -f "$dir/model.safetensors" ]; then
    echo "serve_bench: writing $dir" >&2
    "$MOE" init --config "bench/configs/$model.json" --random --type q4_0 --out "$dir"
  fi
  echo "serve_bench: decode reference of $model (moe bench decode)" >&2
  "$MOE" bench decode --model "$dir" --tokens 32 --threads "$THREADS" --out "$RESULTS/serve_decode_$model-q4_0.md" >&2
  out="$RESULTS/serve_$model-q4_0.json"
  python3 bench/serve_bench_client.py --moe "$MOE" --model "$dir" --threads "$THREADS" \
    --streams "$STREAMS" --tokens "$TOKENS" --prompt "$PROMPT" --reps "$REPS" \
    --decode-json "$RESULTS/serve_decode_$model-q4_0.json" --out "$out"
  jsons+=("$out")
done
python3 bench/serve_bench_client.py --report "${jsons[@]}" > "$RESULTS/serve.md"
echo "serve_bench: wrote $RESULTS/serve.md" >&2
