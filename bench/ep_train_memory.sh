#!/usr/bin/env bash
# Training memory per rank under expert parallelism: `moe train` of one model on 1, 2 and 4 ranks
# (and 4 ranks with --ep 2), each rank's peak resident memory (GNU time's maximum RSS), the
# routed-expert parameters it holds (metrics.jsonl), the median seconds per step, and the size of each
# checkpoint shard. Each rank allocates weights, gradients and two AdamW moments (16 bytes per
# parameter) only for its own experts, so a rank's expert memory should fall as 1/N while the
# replicated part stays.
#
# Usage: bench/ep_train_memory.sh > table.md
#   MOE    the moe binary (default build/bin/moe)   STEPS  training steps (default 6)
# Needs mpirun (Open MPI), python3 and GNU time (/usr/bin/time). As root, it sets
# OMPI_ALLOW_RUN_AS_ROOT. One OpenMP thread per rank.
set -euo pipefail
MOE=${MOE:-build/bin/moe}
STEPS=${STEPS:-6}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/corpus.txt" <<'PY'
import sys
words = "the expert router sends each token to a few experts while the shared expert sees every token".split()
with open(sys.argv[1], "w") as f:
    f.write("\n".join(" ".join(words[(i * k + 3) % len(words)] for k in range(1, 9)) + "."
                      for i in range(3000)))
PY
# 2 MoE layers x 16 experts x 3 matrices of 64 x 512: 3.1M expert parameters (50 MiB of training
# state), next to about 0.1M replicated ones.
args=(train --data "$work/corpus.txt" --vocab 300 --layers 2 --d-model 64 --heads 2 --experts 16
      --top-k 2 --expert-ffn 512 --batch 8 --seq 32 --steps "$STEPS" --eval-every 0
      --eval-windows 8 --save-every "$STEPS" --threads 1 --quiet)
echo "| ranks | expert params per rank | peak RSS per rank (MiB) | s/step | checkpoint shards (MiB) |"
echo "|---|---|---|---|---|"
for cfg in "1" "2" "4" "4 --ep 2"; do
  np=${cfg%% *}
  ep=""
  [[ "$cfg" == *--ep* ]] && ep="--ep ${cfg##* }"
  out="$work/run-${cfg// /_}"
  launch=()
  [[ $np -gt 1 ]] && launch=(mpirun -np "$np" --oversubscribe --bind-to none)
    # shellcheck disable=SC2016,SC2086
  "${launch[@]}" sh -c '/usr/bin/time -f "rss_kb %M" -o "$0/time-${OMPI_COMM_WORLD_RANK:-0}" "$@"' \
    "$work" "$MOE" "${args[@]}" --out "$out" $ep 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
    python3 - "$out" "$work" "$cfg" <<'PY'
import glob, json, os, sys
out, work, cfg = sys.argv[1:4]
lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"final"' not in l]
held = lines[-1].get("expert_params_per_rank", [3 * 2 * 16 * 64 * 512])
rss = []
for f in sorted(glob.glob(os.path.join(work, "time-*"))):
    for l in open(f):
        if l.startswith("rss_kb"):
            rss.append(int(l.split()[1]) / 1024)
    os.remove(f)
ck = os.path.join(out, "checkpoint")
shards = sorted(f for f in os.listdir(ck) if f.startswith("model") and f.endswith(".safetensors"))
sizes = ", ".join("%.1f" % (os.path.getsize(os.path.join(ck, f)) / 2**20) for f in shards)
secs = sorted(8 * 32 / l["tokens_per_s"] for l in lines)  # each step's seconds
per_step = secs[len(secs) // 2]
print("| %s | %s | %s | %.3f | %s |" % (cfg, ", ".join("%.2fM" % (h / 1e6) for h in held),
      ", ".join("%.0f" % r for r in rss), per_step, sizes))
PY
done
