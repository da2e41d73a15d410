#!/usr/bin/env bash
# CPU benchmarks of moe.cpp against the machine's limits; writes bench/results/.
#
#   bench/cpu_bench.sh                 # everything that fits on this machine
#   PARTS=layer bench/cpu_bench.sh     # only the layer benchmarks (PARTS: layer, models, or both)
#
# 1. `moe bench layer` for every config in bench/configs/ at f32, bf16, q8_0 and q4_0 (one MoE
#    layer at the real shapes, random weights, cold and warm): results/layer_<model>_<type>.{md,json}.
# 2. `moe bench decode` and `moe bench prefill` on random-weight checkpoints written by `moe init`
#    (OLMoE-1B-7B q8_0 and q4_0, Qwen3-30B-A3B q4_0): results/{decode,prefill}_<name>.{md,json}.
#    A checkpoint is written only if the disk has room for it, and benchmarked only if it fits in
#    memory (quantized matrices run from the mapped file, so about the file); otherwise the script
#    says so and goes on. Checkpoints go to $CKPT_DIR (git-ignored runs/) and are deleted after
#    use unless KEEP_CKPT=1.
#
# Environment: MOE (binary, default build/bin/moe), THREADS (0 = all cores), TYPES, CONFIGS
# (names of bench/configs/*.json without .json), CKPT_DIR (default runs/bench_ckpt), PARTS,
# MIN_TIME (seconds per layer case, default 1), QUIET=1 (wait for idle CPUs before each
# measurement; see wait_quiet).
#
# Measurements are only meaningful on an otherwise idle machine: every report records the load
# average and the share of the CPUs other processes used while it measured.
set -euo pipefail

cd "$(dirname "$0")/.."
MOE=${MOE:-build/bin/moe}
THREADS=${THREADS:-0}
TYPES=${TYPES:-"f32 bf16 q8_0 q4_0"}
CONFIGS=${CONFIGS:-"olmoe-1b-7b qwen3-30b-a3b deepseek-v2-lite gpt-oss-20b mixtral-8x7b-v0.1"}
CKPT_DIR=${CKPT_DIR:-runs/bench_ckpt}
PARTS=${PARTS:-"layer models"}
MIN_TIME=${MIN_TIME:-1}
RESULTS=bench/results

[ -x "$MOE" ] || { echo "cpu_bench: $MOE not found; build it first (cmake --build --preset release --target moe)" >&2; exit 1; }
mkdir -p "$RESULTS"

load() { cut -d' ' -f1 /proc/loadavg; }
note() { echo "cpu_bench: $* (load $(load))" >&2; }

# Share of the CPUs busy over the next 2 seconds, in percent (/proc/stat).
busy_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[6]+a[7]) ))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) ))
  echo $(( 100 * busy / (busy + idle + 1) ))
}
# On a shared machine (QUIET=1), wait before each measurement until the CPUs are at most 10%
# busy (other processes), checking every few seconds, for at most QUIET_MAX seconds (default 1800).
wait_quiet() {
  [ "${QUIET:-0}" = 1 ] || return 0
  local waited=0 b
  while b=$(busy_pct); [ "$b" -gt 10 ]; do
    [ "$waited" -ge "${QUIET_MAX:-1800}" ] && { echo "cpu_bench: still ${b}% busy, measuring anyway" >&2; return 0; }
    [ "$waited" = 0 ] && echo "cpu_bench: waiting for the CPUs to be idle (${b}% busy)" >&2
    sleep 3; waited=$((waited + 5))
  done
}

if awk -v l="$(load)" 'BEGIN { exit !(l > 1.2) }'; then
  echo "cpu_bench: warning: load average $(load) > 1.2: the machine is busy and the numbers will be low" >&2
fi

if [[ " $PARTS " == *" layer "* ]]; then
  for cfg in $CONFIGS; do
    for t in $TYPES; do
      wait_quiet
      note "layer $cfg $t"
      "$MOE" bench layer --config "bench/configs/$cfg.json" --type "$t" --threads "$THREADS" \
        --min-time "$MIN_TIME" --out "$RESULTS/layer_${cfg}_$t.md" >/dev/null
    done
  done
fi

# bytes available on the filesystem of $1
avail_disk() { df -B1 --output=avail "$1" | tail -1 | tr -d ' '; }
mem_avail() { awk '/MemAvailable/ { print $2 * 1024 }' /proc/meminfo; }

# model_run NAME CONFIG TYPE DISK_BYTES RESIDENT_BYTES: init, decode, prefill, delete.
# DISK_BYTES: the checkpoint's size; RESIDENT_BYTES: the memory a loaded model needs (the
# checkpoint pages it reads; quantized matrices are used in place).
model_run() {
  local name=$1 cfg=$2 type=$3 disk=$4 resident=$5
  local dir="$CKPT_DIR/$name"
  mkdir -p "$CKPT_DIR"
  if [ ! -d "$dir" ]; then
    local free
    free=$(avail_disk "$CKPT_DIR")
    if [ "$free" -lt $((disk + (2 << 30))) ]; then
      echo "cpu_bench: SKIPPED $name: needs $((disk >> 30)) GiB of disk, $((free >> 30)) GiB free" >&2
      return 0
    fi
    note "init $name"
    "$MOE" init --config "bench/configs/$cfg.json" --random --type "$type" --out "$dir"
  fi
  local mem
  mem=$(mem_avail)
  if [ "$mem" -lt "$resident" ]; then
    echo "cpu_bench: SKIPPED decode/prefill of $name: needs about $((resident >> 30)) GiB of memory, $((mem >> 30)) GiB available" >&2
  else
    wait_quiet
    note "decode $name"
    "$MOE" bench decode --model "$dir" --tokens 64 --threads "$THREADS" --out "$RESULTS/decode_$name.md"
    wait_quiet
    note "prefill $name"
    "$MOE" bench prefill --model "$dir" --tokens 512 --threads "$THREADS" --out "$RESULTS/prefill_$name.md"
  fi
  [ "${KEEP_CKPT:-0}" = 1 ] || rm -rf "$dir"
}

if [[ " $PARTS " == *" models "* ]]; then
  G=$((1 << 30))
  # OLMoE-1B-7B: 6.4B expert weights + 0.27B attention (q8_0: 7.1 GiB of file; q4_0: 4.0 GiB)
  # + 0.10B embedding (fp32) + 0.10B lm_head (q8_0 for both types).
  model_run olmoe-1b-7b-q8_0 olmoe-1b-7b q8_0 $((8 * G)) $((8 * G))
  model_run olmoe-1b-7b-q4_0 olmoe-1b-7b q4_0 $((5 * G)) $((5 * G))
  # Qwen3-30B-A3B q4_0: 29.0B expert weights (16.3 GB), 0.9B attention (0.5 GB), 0.31B embedding
  # (1.25 GB fp32) and 0.31B lm_head (0.33 GB q8_0): about 18.4 GB (17.2 GiB) of file, which is
  # also about what a loaded model keeps resident.
  model_run qwen3-30b-a3b-q4_0 qwen3-30b-a3b q4_0 $((18 * G)) $((18 * G))
fi
note "done"
