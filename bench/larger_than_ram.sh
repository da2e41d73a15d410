#!/usr/bin/env bash
# Decode speed when the weights are not in the page cache. moe.cpp memory-maps the checkpoint and
# leaves raw (BF16/Q8_0/Q4_0) routed experts in the map, so a token reads from disk only what its
# experts and the other in-place tensors need. Measures `moe generate --stats` (load, prefill,
# every decode step: seconds, major page faults, bytes read from storage by the process) in three
# conditions:
#   warm     the checkpoint file is fully in the page cache
#   cold     the file was evicted from the page cache just before the run (posix_fadvise
#            DONTNEED on the file through `dd iflag=nocache`, or DROP=drop_caches for the global
#            `echo 3 > /proc/sys/vm/drop_caches`)
#   limit-X  cold, and the process runs in a memory cgroup limited to X (less than the file), so
#            the page cache cannot hold every expert: the steady state of a larger-than-RAM model
#   limit-X-cache[-noprefetch]
#            the same limit with `--expert-cache` (moe/expert_cache.h) sized to fit inside it
#            (X minus CACHE_RESERVE), with and without the next layer's prefetch
# Each condition runs for two routings of the same shapes: the config's own learned router with
# random weights (which, untrained, sends most tokens to the same few experts per layer), and
# moe.cpp's "random" router (a moe_cpp config of the same shapes: every token draws its experts
# uniformly, a stand-in for the balanced load of a trained MoE, and the harder case for a cache).
# Writes bench/results/larger_than_ram.md.
#
# Usage: bench/larger_than_ram.sh
#   MODEL   checkpoint folder (default runs/olmoe-q4; MODEL-random-router for the second routing);
#           if absent it is written with `moe init --config $CONFIG --random --type $TYPE` and
#           deleted at the end (KEEP=1 keeps it)
#   ROUTERS which routings (default "learned random")
#   CONFIG  default bench/configs/olmoe-1b-7b.json     TYPE   default q4_0
#   N       decode steps (default 32)   THREADS (default: all cores)
#   IDS     prompt ids (default 1: the "prefill" is the first token, so decode starts cold)
#   LIMITS  memory limits for the third condition (default "50%": half the checkpoint's size;
#           sizes like 2560M also work; "" skips it)
#   CACHE_RESERVE  what the cache leaves of a limit for the process and the page cache (default
#           640M: the non-expert tensors a token reads, about 0.26 GB, and the process's own memory)
#   CACHE_MODES    which cache rows (default "prefetch noprefetch"; "" skips them)
#   DROP    fadvise (default: only this file leaves the cache) or drop_caches
#   MOE     the moe binary (default build/bin/moe)
# Needs build/bin/moe, python3, GNU time (/usr/bin/time) and, for the limits, a writable memory
# cgroup (v1: a child of this shell's memory cgroup; v2: a child of this shell's cgroup) or
# systemd-run; without one that condition is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-runs/olmoe-q4}
CONFIG=${CONFIG:-bench/configs/olmoe-1b-7b.json}
TYPE=${TYPE:-q4_0}
N=${N:-32}
IDS=${IDS:-1}
THREADS=${THREADS:-$(nproc)}
LIMITS=${LIMITS-50%}
CACHE_RESERVE=${CACHE_RESERVE:-640M}
CACHE_MODES=${CACHE_MODES-prefetch noprefetch}
ROUTERS=${ROUTERS:-learned random}
DROP=${DROP:-fadvise}
KEEP=${KEEP:-0}
MOE=$(realpath "${MOE:-build/bin/moe}")
WORK=$(mktemp -d)
CREATED=()
CGROUPS=()
cleanup() {
  for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  if [ "$KEEP" != 1 ]; then for d in "${CREATED[@]}"; do rm -rf "$d"; done; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ensure_model DIR CONFIG: writes a random-weight checkpoint if DIR has none.
ensure_model() {
  if [ ! -f "$1/model.safetensors" ] && [ ! -f "$1/model.safetensors.index.json" ]; then
    mkdir -p "$(dirname "$1")"
    local avail
    avail=$(df -B1 --output=avail "$(dirname "$1")" | tail -1)
    echo "larger_than_ram: writing $1 ($TYPE, random) from $2; $((avail / 1073741824)) GiB free" >&2
    CREATED+=("$1")
    "$MOE" init --config "$2" --random --type "$TYPE" --out "$1" 2> /dev/null
  fi
}

# The same shapes as a moe_cpp config with the "random" router.
random_router_config() {
  python3 - "$1" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
D, H = c["hidden_size"], c["num_attention_heads"]
E = c.get("num_experts", c.get("num_local_experts", c.get("n_routed_experts")))
F = c.get("moe_intermediate_size", c.get("intermediate_size"))
o = {"architectures": ["MoeCppForCausalLM"], "model_type": "moe_cpp", "hidden_size": D,
     "num_hidden_layers": c["num_hidden_layers"], "num_attention_heads": H,
     "num_key_value_heads": c.get("num_key_value_heads", H), "head_dim": c.get("head_dim", D // H),
     "vocab_size": c["vocab_size"], "num_experts": E, "num_experts_per_tok": c["num_experts_per_tok"],
     "moe_intermediate_size": F, "intermediate_size": F, "rms_norm_eps": c.get("rms_norm_eps", 1e-6),
     "rope_theta": c.get("rope_theta", 10000.0),
     "max_position_embeddings": c.get("max_position_embeddings", 4096),
     "tie_word_embeddings": bool(c.get("tie_word_embeddings", False)),
     "qk_norm": "full" if c.get("model_type") == "olmoe" else "head", "qkv_bias": False,
     "decoder_sparse_step": 1, "mlp_only_layers": [], "router": {"kind": "random"}}
print(json.dumps(o, indent=2))
PY
}

evict() {
  if [ "$DROP" = drop_caches ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
  else
    for f in "${FILES[@]}"; do dd if="$f" iflag=nocache count=0 status=none; done
  fi
}
warm_up() { cat "${FILES[@]}" > /dev/null; }
cached_bytes() { fincore --bytes --noheadings --output RES "${FILES[@]}" 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }

# run NAME "EXTRA MOE ARGS" [command prefix...]: one generate run of $CUR with its
# /usr/bin/time -v and --stats output.
run() {
  local name=$1 extra=$2
  shift 2
  echo "$(cached_bytes)" > "$WORK/$name.cached"
  echo "$FILE_BYTES" > "$WORK/$name.bytes"
  cut -d' ' -f1 /proc/loadavg > "$WORK/$name.load"
  "$@" /usr/bin/time -v -o "$WORK/$name.time" "$MOE" generate --model "$CUR" --ids "$IDS" \
    -n $((N + 1)) --ignore-eos --temperature 1 --seed 1 --threads "$THREADS" --stats "$WORK/$name.json" \
    $extra > /dev/null 2> "$WORK/$name.err" || { echo "run $name failed:" >&2; cat "$WORK/$name.err" >&2; return 1; }
  grep '^stats:' "$WORK/$name.err" | sed "s/^/  $name: /" >&2
  echo "$name" >> "$WORK/runs"
}

# Makes a memory cgroup (named after $2) limited to $1 bytes; prints how to run in it (cgroup-v1:DIR, cgroup-v2:DIR
# or systemd-run).
in_cgroup() {
  local limit=$1 tag=$2 cg
  local own1 own2
  own1=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
  own2=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
  if [ -n "$own1" ] && [ -w "/sys/fs/cgroup/memory$own1" ]; then
    cg=/sys/fs/cgroup/memory${own1%/}/moe-larger-than-ram-$$-$tag
    mkdir "$cg" && echo "$limit" > "$cg/memory.limit_in_bytes" || { rmdir "$cg" 2>/dev/null; return 1; }
    echo "cgroup-v1:$cg"
  elif [ -f /sys/fs/cgroup/cgroup.controllers ] && [ -w "/sys/fs/cgroup${own2%/}" ]; then
    cg=/sys/fs/cgroup${own2%/}/moe-larger-than-ram-$$-$tag
    mkdir "$cg" && echo "$limit" > "$cg/memory.max" || { rmdir "$cg" 2>/dev/null; return 1; }
    echo "cgroup-v2:$cg"
  elif command -v systemd-run > /dev/null && [ "$(cat /proc/1/comm)" = systemd ]; then
    echo "systemd-run"
  else
    return 1
  fi
}

NOTES=()
for router in $ROUTERS; do
  if [ "$router" = learned ]; then
    CUR=$MODEL
    ensure_model "$CUR" "$CONFIG"
  else
    CUR=$MODEL-random-router
    random_router_config "$CONFIG" > "$WORK/random-router.json"
    ensure_model "$CUR" "$WORK/random-router.json"
  fi
  FILES=("$CUR"/*.safetensors)
  FILE_BYTES=$(du -cb "${FILES[@]}" | tail -1 | cut -f1)
  if [ -z "${SEQ:-}" ]; then
    # Sequential read speed of the storage under the file (1 GiB, O_DIRECT, after eviction).
    evict
    SEQ=$(dd if="${FILES[0]}" of=/dev/null bs=8M count=128 iflag=direct 2>&1 | tail -1 | sed 's/.*, //')
  fi
  echo "larger_than_ram: $CUR ($router router), $((FILE_BYTES / 1048576)) MiB in ${#FILES[@]} file(s); $N decode steps, $THREADS threads" >&2
  warm_up
  run "$router-warm" ""
  evict
  run "$router-cold" ""
  for lim in $LIMITS; do
    case $lim in
      *%) bytes=$((FILE_BYTES * ${lim%\%} / 100 / 1048576 * 1048576)); lim=$((bytes / 1048576))M ;;
      *) bytes=$(numfmt --from=iec "$lim") ;;
    esac
    cache_gib=$(python3 -c "print(f'{($bytes - $(numfmt --from=iec "$CACHE_RESERVE")) / 2**30:.3f}')")
    variants=("plain")
    for mode in $CACHE_MODES; do variants+=("$mode"); done
    for v in "${variants[@]}"; do
      case $v in
        plain) name="$router-limit-$lim"; extra="" ;;
        prefetch) name="$router-limit-$lim-cache"; extra="--expert-cache $cache_gib" ;;
        noprefetch) name="$router-limit-$lim-cache-noprefetch"; extra="--expert-cache $cache_gib --no-expert-prefetch" ;;
      esac
      if how=$(in_cgroup "$bytes" "$router-$lim-$v"); then
        case $how in cgroup-*) CGROUPS+=("${how#*:}") ;; esac
        evict
        case $how in
          cgroup-v1:*|cgroup-v2:*)
            run "$name" "$extra" sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "${how#*:}" ;;
          systemd-run)
            run "$name" "$extra" systemd-run --scope --quiet -p MemoryMax="$bytes" -p MemorySwapMax=0 ;;
        esac
        NOTES+=("$name: memory limit $bytes bytes ($lim) through ${how%%:*}${extra:+; $extra}")
        case $how in cgroup-*) rmdir "${how#*:}" 2>/dev/null || true ;; esac
      else
        NOTES+=("$name: skipped: no writable memory cgroup and no systemd-run with systemd as init")
      fi
    done
  done
done

cpuinfo() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'; }
CPU="$(cpuinfo 'model name') (family $(cpuinfo 'cpu family') model $(cpuinfo 'model\s*:'), $(nproc) vCPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM)"
DISK=$(df --output=source "$(dirname "$MODEL")" | tail -1)
mkdir -p bench/results
python3 - "$WORK" "$MODEL" "$IDS" "$SEQ" "$CONFIG" "$TYPE" "$(du -cb "$MODEL"/*.safetensors | tail -1 | cut -f1)" "$N" "$THREADS" "$CPU" "$DROP" "$DISK" "${NOTES[@]}" \
  > bench/results/larger_than_ram.md <<'PY'
import json, os, re, sys, datetime
work, model, ids, seq, config, qtype, file_bytes, n, threads, cpu, drop, disk = sys.argv[1:13]
notes = sys.argv[13:]
file_bytes, n = int(file_bytes), int(n)
if not os.path.exists(f"{model}/config.json"):
    model += "-random-router"
cfg = json.load(open(f"{model}/config.json"))
L, K, D = cfg["num_hidden_layers"], cfg["num_experts_per_tok"], cfg["hidden_size"]
E = cfg.get("num_experts", cfg.get("num_local_experts", cfg.get("n_routed_experts")))
F = cfg.get("moe_intermediate_size", cfg.get("intermediate_size"))
V = cfg["vocab_size"]
per_weight = {"q4_0": 18 / 32, "q8_0": 34 / 32, "bf16": 2, "f32": 4}[qtype]
expert_bytes = 3 * F * D * per_weight
active = L * K * expert_bytes                     # routed-expert bytes one token needs
all_experts = L * E * expert_bytes
other = file_bytes - all_experts                   # embeddings, attention, lm_head, norms, routers
runs = [l.strip() for l in open(f"{work}/runs")]
def gtime(name):
    t = open(f"{work}/{name}.time").read()
    def field(label):
        m = re.search(re.escape(label) + r":\s*(\S+)", t)
        return m.group(1) if m else "?"
    return {"majflt": int(field("Major (requiring I/O) page faults")),
            "maxrss_kb": int(field("Maximum resident set size (kbytes)")),
            "fs_in": int(field("File system inputs")), "wall": field("Elapsed (wall clock) time")}
MB = 1e6
def fmt_mb(b): return f"{b / MB:,.0f} MB" if b >= 0 else "n/a"
print("# Decode from a memory-mapped checkpoint that is not in RAM\n")
print(f"Model: `{model}`, a random-weight {cfg['model_type']} checkpoint (`moe init --config {config} "
      f"--random --type {qtype}`: {L} layers, {E} experts top-{K}, hidden {D}, expert ffn {F}, "
      f"vocab {V}); {file_bytes / 2**30:.2f} GiB on disk ({disk}: {seq} sequential with O_DIRECT). "
      f"Routed experts: {all_experts / 2**30:.2f} GiB, {expert_bytes / 2**20:.2f} MiB per expert "
      f"(gate, up and down stored one after another); a token's {L}x{K} active experts are "
      f"**{active / MB:,.0f} MB**. The other tensors take {other / MB:,.0f} MB of the file, all "
      f"left in the map (the attention matrices and the lm_head raw, read in full by every "
      f"token; of the f32 embeddings only the token's row).")
nids = len(ids.split(","))
print(f"Run: `moe generate --ids {ids} -n {n + 1} --ignore-eos --temperature 1 --seed 1 --threads {threads} "
      f"--stats` ({nids}-token prefill, then {n} decode steps on sampled, so differently routed, "
      f"tokens), on {cpu}, {datetime.date.today()}. "
      f"Cache eviction: {drop}. Reproduce: `bench/larger_than_ram.sh`.\n")
print("Routing: `learned-*` rows run the checkpoint above, whose random router weights send most "
      "tokens of a layer to the same few experts (an untrained router; `moe inspect --data` on it "
      "shows 40-45 of 64 experts per layer receiving no token of 64); `random-*` rows run the same "
      "shapes as a `moe_cpp` config with moe.cpp's `random` router (`" + model + "-random-router`, "
      "no router weights), where each token draws its experts uniformly: the balanced load a "
      "trained MoE is pushed toward, and the harder case for a page cache. "
      "`limit-X`: cold start inside a memory cgroup limited to X, which must hold the process's "
      "anonymous memory and what it keeps of the file; `limit-X-cache`: the same with "
      "`--expert-cache` sized to fit in it (X minus the reserve named in the notes), "
      "`-noprefetch` without the next layer's prefetch.\n")
print("| condition | load avg | page cache before | load s | load read | prefill s | prefill read | decode tokens/s | decode major faults | decode read / token | read / active-expert bytes | max RSS | process major faults |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
steps = {}
for name in runs:
    s = json.load(open(f"{work}/{name}.json"))
    cached = int(open(f"{work}/{name}.cached").read().strip() or 0)
    fbytes = int(open(f"{work}/{name}.bytes").read().strip())
    t = gtime(name)
    dec, load, pre = s["decode"], s["load"], s.get("prefill", {})
    per_tok = dec["read_bytes"] / dec["tokens"] if dec["read_bytes"] >= 0 else -1
    steps[name] = s["decode_steps"]["rows"]
    loadavg = open(f"{work}/{name}.load").read().strip()
    print(f"| {name} | {loadavg} | {100 * cached / fbytes:.0f}% | {load['seconds']:.2f} | {fmt_mb(load['read_bytes'])} | "
          f"{pre.get('seconds', 0):.2f} | {fmt_mb(pre.get('read_bytes', -1))} | {dec['tokens_per_s']:.2f} | {dec['major_faults']:,} | "
          f"{fmt_mb(per_tok)} | {per_tok / active:.2f}x | {t['maxrss_kb'] / 1024:,.0f} MiB | {t['majflt']:,} |")
print()
print("Per decode step (seconds / MB read from storage), steps 1, 2, 4, 8, 16 and the last:\n")
pick = sorted({i for i in (0, 1, 3, 7, 15, n - 1) if i < n})
print("| condition | " + " | ".join(f"step {i + 1}" for i in pick) + " |")
print("|---|" + "---:|" * len(pick))
for name, rows in steps.items():
    print(f"| {name} | " + " | ".join(f"{rows[i][0]:.2f} s / {rows[i][2] / MB:,.0f} MB" for i in pick) + " |")
print()
cache_rows = [n for n in runs if "cache_lookups" in json.load(open(f"{work}/{n}.json"))["decode"]]
if cache_rows:
    print("Expert cache, decode steps only (prefill excluded). Targets of issue 14: decode tokens/s "
          ">= 2x plain mmap under the same limit; bytes read from storage per token <= 1.5x the "
          "cache misses' expert bytes.\n")
    print("| condition | cache | hit rate | miss expert bytes / token | read into the cache / token "
          "| storage read / token | storage read / miss expert bytes | prefetch requested / token "
          "| prediction accuracy | decode tokens/s | vs plain mmap, same limit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in cache_rows:
        s = json.load(open(f"{work}/{name}.json"))
        d, c = s["decode"], s["expert_cache"]
        tok = d["tokens"]
        miss = d["miss_expert_bytes"] / tok
        read = d["read_bytes"] / tok if d["read_bytes"] >= 0 else -1
        plain = name.split("-cache")[0]
        ratio = "n/a"
        if plain in steps:
            p = json.load(open(f"{work}/{plain}.json"))["decode"]["tokens_per_s"]
            ratio = f"{d['tokens_per_s'] / p:.2f}x"
        acc = d["predicted_hits"] / d["predicted_experts"] if d["predicted_experts"] else float("nan")
        print(f"| {name} | {c['bytes'] / 2**30:.2f} GiB, {c['slots']} experts{'' if c['locked'] else ' (not locked)'} | "
              f"{100 * d['cache_hits'] / max(d['cache_lookups'], 1):.1f}% | {fmt_mb(miss)} | "
              f"{fmt_mb(d['cache_read_bytes'] / tok)} | {fmt_mb(read)} | "
              f"{read / miss if miss > 0 and read >= 0 else float('nan'):.2f}x | "
              f"{fmt_mb(d['prefetch_bytes'] / tok)} | {100 * acc:.1f}% | {d['tokens_per_s']:.2f} | {ratio} |")
    print()
for note in notes:
    print(f"- {note}")
PY
cat bench/results/larger_than_ram.md
