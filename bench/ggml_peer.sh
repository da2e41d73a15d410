#!/usr/bin/env bash
# SUPERSEDED by bench/llamacpp_peer/run.sh (llama.cpp's whole MoE FFN graph, repacked weights,
# medians, interleaved): this script times one MUL_MAT_ID op and is kept for the record only.
# ggml as a peer for the MoE expert matmul: builds a ggml checkout (CPU only, Release), runs
# `test-backend-ops perf -o MUL_MAT_ID -b CPU` on the cases of its own list that have our shapes,
# and bench/ggml_mul_mat_id_bench.c (linked against the same build) on all of our shapes, since
# test-backend-ops only runs its fixed list. Prints one table of ggml's numbers and, if
# bench/results/layer_*.json from `moe bench layer` exist, the moe.cpp / ggml ratio per matching
# case.
#
# Usage: bench/ggml_peer.sh [THREADS]
#   GGML_DIR   the ggml checkout (default third_party_peers/ggml; git-ignored, never committed)
#   TYPES      expert types (default f32,q8_0,q4_0)      NS   token counts (default 1,8,64,512)
#   CASES      n_mats:n_used:m:k ... (default: OLMoE-1B-7B 64:8:1024:2048, Qwen3-30B-A3B 128:8:768:2048)
#   TBO_REPEATS test-backend-ops runs per case (default 3; the best is kept, as the machine may be
#              shared; ggml_mul_mat_id_bench keeps the best of 5 rounds itself)
#   OUT        also write the table (markdown) here
#   LAYER_JSON moe.cpp results to compare with (default bench/results/layer_*.json)
# Exits 0 with a message when the checkout is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
GGML_DIR=${GGML_DIR:-third_party_peers/ggml}
THREADS=${1:-$(nproc)}
TYPES=${TYPES:-f32,q8_0,q4_0}
NS=${NS:-1,8,64,512}
CASES=${CASES:-"64:8:1024:2048 128:8:768:2048"}
TBO_REPEATS=${TBO_REPEATS:-3}
if [ ! -f "$GGML_DIR/CMakeLists.txt" ] || [ ! -f "$GGML_DIR/include/ggml.h" ]; then
  echo "ggml_peer: skipped: no ggml checkout at $GGML_DIR (clone https://github.com/ggml-org/ggml there, or set GGML_DIR)"
  exit 0
fi
# moe.cpp runs OpenMP with a passive wait policy (tools/moe/main.cpp); ggml gets the same unless set.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
BUILD=$GGML_DIR/build-moe
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "ggml_peer: building $GGML_DIR ($(git -C "$GGML_DIR" log -1 --format='%h %cs' 2>/dev/null || echo 'unknown commit')) in $BUILD" >&2
cmake -S "$GGML_DIR" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF \
  -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_BUILD_TESTS=ON >/dev/null
cmake --build "$BUILD" -j 2 --target test-backend-ops ggml >/dev/null
LIBDIRS=$(find "$BUILD" -name 'libggml*.so' -printf '%h\n' | sort -u)
LDFLAGS=""
for d in $LIBDIRS; do LDFLAGS="$LDFLAGS -L$d -Wl,-rpath,$(realpath "$d")"; done
cc -O2 -std=c11 -Wall bench/ggml_mul_mat_id_bench.c -I"$GGML_DIR/include" $LDFLAGS \
  -lggml -lggml-cpu -lggml-base -o "$WORK/mmid_bench"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# test-backend-ops: the cases of its list with our shapes and types (Qwen3-30B-A3B's are listed).
TBO=$(find "$BUILD" -name test-backend-ops -type f -perm -u+x | head -1)
N_RE=$(echo "$NS" | tr ',' '|')
T_RE=$(echo "$TYPES" | tr ',' '|')
: > "$WORK/tbo.txt"
for rep in $(seq "$TBO_REPEATS"); do
  for c in $CASES; do
    IFS=: read -r E U M K <<< "$c"
    echo "ggml_peer: test-backend-ops perf -o MUL_MAT_ID -b CPU, n_mats=$E m=$M k=$K (run $rep of $TBO_REPEATS)" >&2
    "$TBO" perf -o MUL_MAT_ID -b CPU \
      -p "type_a=($T_RE),type_b=f32,n_mats=$E,n_used=$U,b=0,m=$M,n=($N_RE),k=$K\$" \
      | sed 's/\x1b\[[0-9;]*m//g' >> "$WORK/tbo.txt" || true
  done
done
echo "ggml_peer: ggml_mul_mat_id_bench $THREADS threads: $TYPES x n=$NS x $CASES" >&2
# shellcheck disable=SC2086
"$WORK/mmid_bench" "$THREADS" "$TYPES" "$NS" $CASES > "$WORK/bench.txt"

cpuinfo() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'; }
HEADER="ggml $(git -C "$GGML_DIR" log -1 --format='%h (%cs)' 2>/dev/null || echo '(unknown commit)'), CPU backend \
(Release, GGML_NATIVE), $THREADS threads, OMP_WAIT_POLICY=$OMP_WAIT_POLICY; \
$(cpuinfo 'model name') (family $(cpuinfo 'cpu family') model $(cpuinfo 'model\s*:'), $(nproc) vCPUs); \
$(date -u '+%Y-%m-%d %H:%M UTC'); load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
python3 - "$WORK/tbo.txt" "$WORK/bench.txt" "$THREADS" "${OUT:-}" "$HEADER" ${LAYER_JSON:-bench/results/layer_*.json} <<'PY'
import glob, json, os, re, sys
tbo, bench, threads, out, header = sys.argv[1:6]
layer_files = [f for f in sys.argv[6:] if os.path.exists(f)]
LINE = re.compile(r"MUL_MAT_ID\(type_a=(\w+),type_b=(\w+),n_mats=(\d+),n_used=(\d+),b=(\d),"
                  r"m=(\d+),n=(\d+),k=(\d+)\):\s+(\d+) runs -\s+([\d.]+) us/run")
MODELS = {(64, 8, 1024, 2048): "OLMoE-1B-7B", (128, 8, 768, 2048): "Qwen3-30B-A3B"}
def parse(path, src):
    groups = {}
    for line in open(path):
        m = LINE.search(line)
        if not m:
            continue
        ta, tb, E, U, b, M, N, K, runs, us = m.groups()
        E, U, M, N, K, us = int(E), int(U), int(M), int(N), int(K), float(us)
        med = re.search(r"median of \d+ rounds: ([\d.]+) us/run", line)
        g = groups.setdefault((ta, E, U, M, N, K), dict(src=src, type=ta, n_mats=E, n_used=U, m=M,
                                                         n=N, k=K, runs=0, all=[], med=None,
                                                         model=MODELS.get((E, U, M, K), "-")))
        g["runs"] += int(runs)
        g["all"].append(us)
        if med:
            g["med"] = float(med.group(1))
    rows = []
    for g in groups.values():
        t = sorted(g.pop("all"))
        g["us"] = t[0]
        g["median"] = g.pop("med") if g["med"] is not None else t[len(t) // 2]
        g["gflops"] = 2.0 * g["m"] * g["k"] * g["n"] * g["n_used"] / g["us"] * 1e-3
        rows.append(g)
    return rows
rows = parse(tbo, "test-backend-ops") + parse(bench, "ggml_mul_mat_id_bench")
order = {"f32": 0, "f16": 1, "bf16": 2, "q8_0": 3, "q4_0": 4}
rows.sort(key=lambda r: (r["model"], order.get(r["type"], 9), r["n"], r["src"]))
lines = ["| model | type_a | n_mats | n_used | m | n | k | ggml source | runs | µs/run (best) | median | GFLOPS (best) |",
         "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
for r in rows:
    lines.append(f"| {r['model']} | {r['type']} | {r['n_mats']} | {r['n_used']} | {r['m']} | {r['n']} | "
                 f"{r['k']} | {r['src']} | {r['runs']} | {r['us']:.1f} | {r['median']:.1f} | {r['gflops']:.1f} |")

# moe.cpp's layer results: any object with "tokens" and a time ("us", "us_median", ...) or "gflops",
# with "type" on it or an enclosing object; its shape from numeric fields (n_mats/experts,
# n_used/top_k, m/expert_ffn, k/hidden) there or in enclosing objects, or from a model name.
def scalars(node):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update({kk: vv for kk, vv in v.items() if not isinstance(vv, (dict, list))})
    out.update({k: v for k, v in node.items() if not isinstance(v, (dict, list))})
    return out
def time_us(rec):
    for k in ("us", "us_min", "us_median", "us_per_call", "us_mean"):  # best first, as ggml's
        if isinstance(rec.get(k), (int, float)):
            return k, rec[k]
    return None, None
def records(node, ctx):
    if isinstance(node, dict):
        ctx = dict(ctx, **scalars(node))
        if "tokens" in node and "type" in ctx and (time_us(node)[0] or "gflops" in node):
            yield ctx
        for v in node.values():
            if isinstance(v, (dict, list)):
                yield from records(v, ctx)
    elif isinstance(node, list):
        for v in node:
            yield from records(v, ctx)
def shape_of(rec, fname):
    def num(*keys):
        for k in keys:
            if isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool):
                return int(rec[k])
        return None
    E = num("n_mats", "experts", "n_experts", "num_experts")
    U = num("n_used", "top_k", "experts_per_token")
    M = num("m", "expert_ffn", "ffn", "moe_intermediate_size")
    K = num("k", "hidden", "d_model", "hidden_size")
    text = " ".join(str(v) for v in rec.values() if isinstance(v, str)).lower() + " " + fname.lower()
    for (e, u, m, k), name in MODELS.items():
        key = name.split("-")[0].lower()
        if key in text:
            E, U, M, K = E or e, U or u, M or m, K or k
    return E, U, M, K
ratio_lines = []
for f in layer_files:
    try:
        doc = json.load(open(f))
    except Exception as e:
        ratio_lines.append(f"- {f}: not read ({e})")
        continue
    for rec in records(doc, {}):
        E, U, M, K = shape_of(rec, os.path.basename(f))
        for r in rows:
            if str(rec["type"]).lower() != r["type"] or int(rec["tokens"]) != r["n"]:
                continue
            if any(x is not None and x != y for x, y in ((E, r["n_mats"]), (U, r["n_used"]), (M, r["m"]), (K, r["k"]))):
                continue
            if str(rec.get("weights", "warm")) != "warm":
                continue  # ggml's numbers are with the weights in cache
            parts = []
            key, us = time_us(rec)
            if us:
                parts.append(f"{key} {us:.1f} µs = {us / r['us']:.2f}x ggml's best µs/run")
            gf, gkey = rec.get("gflops"), "gflops"
            if us and isinstance(rec.get("flops"), (int, float)) and rec["flops"] > 0:
                gf, gkey = rec["flops"] / us * 1e-3, f"flops / {key}"
            if isinstance(gf, (int, float)) and gf > 0:
                parts.append(f"{gf:.1f} GFLOPS ({gkey}) = {gf / r['gflops']:.2f}x ggml's")
            known = "" if None not in (E, U, M, K) else " (shape not in the JSON; matched on type and tokens)"
            ratio_lines.append(f"| {os.path.basename(f)} | {r['model']} | {r['type']} | {r['n']} | {r['src']} | "
                               f"{'; '.join(parts)}{known} |")
text = header + "\n\n" + "\n".join(lines) + "\n"
if layer_files:
    text += ("\nmoe.cpp (`moe bench layer`) against ggml, per matching case. A moe.cpp time or GFLOPS "
             "that covers a whole MoE layer (router, gate, up and down: about 3 MUL_MAT_IDs) is not "
             "one MUL_MAT_ID: compare GFLOPS, which both count for their own work.\n\n")
    if any(l.startswith("|") for l in ratio_lines):
        text += "| moe.cpp file | model | type | n | ggml source | ratio |\n|---|---|---|---:|---|---|\n"
    text += "\n".join(ratio_lines) + ("\n" if ratio_lines else "(no matching case)\n")
else:
    text += "\n(no bench/results/layer_*.json from `moe bench layer`: ggml's numbers only)\n"
print(text, end="")
if out:
    open(out, "w").write(text)
PY
