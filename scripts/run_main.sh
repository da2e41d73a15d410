#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, then run a bundled tiny MoE
# checkpoint: print its architecture summary and generate a continuation through the KV cache.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MOE_SKIP_DEPS:-0}" != "1" ]; then scripts/install_deps.sh; fi
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
MODEL=${1:-tests/fixtures/qwen3_moe_qknorm}
echo "== moe inspect --model $MODEL"
build/bin/moe inspect --model "$MODEL"
echo "== moe generate --model $MODEL --ids 1,17,42,99 -n 16 --temperature 0"
build/bin/moe generate --model "$MODEL" --ids 1,17,42,99 -n 16 --temperature 0 --ignore-eos
echo "== moe generate ... --temperature 0.8 --top-p 0.9 --seed 7"
build/bin/moe generate --model "$MODEL" --ids 1,17,42,99 -n 16 --temperature 0.8 --top-p 0.9 --seed 7 --ignore-eos
