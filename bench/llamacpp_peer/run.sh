#!/usr/bin/env bash
# moe.cpp's MoE layer against the MoE FFN graph llama.cpp builds (build_moe_ffn), on ggml's CPU
# backend with its extra (repacked) buffer types, in one process: see llamacpp_peer.cpp.
#
# Needs a ggml checkout at the pinned commit in a git-ignored folder (nothing of ggml is committed):
#   git clone https://github.com/ggml-org/ggml third_party_peers/ggml
#   git -C third_party_peers/ggml checkout d99724f2b141fed9e1a9f402213506c081433465
# Builds ggml there (CPU backend as llama.cpp builds it by default: Release, GGML_NATIVE, OpenMP,
# llamafile sgemm, CPU repack) into third_party_peers/ggml/install-peer, then moe.cpp's
# llamacpp_peer in build-peer/ (-DMOE_LLAMACPP_PEER=<that prefix>), and runs it.
#
# Usage: bench/llamacpp_peer/run.sh
#   GGML_DIR  ggml checkout (default third_party_peers/ggml)
#   CONFIGS   config.json files (default: bench/configs/olmoe-1b-7b.json bench/configs/qwen3-30b-a3b.json)
#   TYPES     expert types (default q4_0,q8_0,q4_k,q6_k)     TOKENS  (default 1,8,64,512)
#   THREADS   threads of both sides (default 2)               MIN_TIME seconds per side per case (default 1)
#   OUT       report (default bench/results/llamacpp_peer.md; the .json goes beside it)
#   OMP_WAIT_POLICY  (default ACTIVE: ggml waits at an OpenMP barrier after every node, and a
#             passive wait doubles its T = 1 time; llama.cpp keeps libgomp's spinning default)
#   ALLOW_OTHER_COMMIT=1  run against a ggml checkout at another commit (the report names it)
#   BUILD_DIR moe.cpp build folder for llamacpp_peer (default build-peer)
#   SKIP_BUILD=1  use the ggml install and BUILD_DIR/bin/llamacpp_peer as they are
#   MIN_REPS, MAX_CASE_TIME, COLD_TOKENS: passed on (defaults 10, 30 s, 1,8)
# Models with a shared expert (Qwen2-MoE, DeepSeek) are built into the graph too, but on an AMX
# Xeon llama.cpp's rule puts their shared-expert matrices in ggml's AMX buffer type, and at the
# pinned commit that path did not finish a T = 1 graph in minutes on the 2-vCPU guest (both
# threads waiting at a barrier), so the default CONFIGS are the two models without one.
# Run it on an otherwise idle machine: the report records the load average and other processes'
# share of the CPUs per case.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIN=d99724f2b141fed9e1a9f402213506c081433465
GGML_DIR=${GGML_DIR:-third_party_peers/ggml}
CONFIGS=${CONFIGS:-"bench/configs/olmoe-1b-7b.json bench/configs/qwen3-30b-a3b.json"}
TYPES=${TYPES:-q4_0,q8_0,q4_k,q6_k}
TOKENS=${TOKENS:-1,8,64,512}
THREADS=${THREADS:-2}
MIN_TIME=${MIN_TIME:-1}
OUT=${OUT:-bench/results/llamacpp_peer.md}
JOBS=${JOBS:-2}
BUILD_DIR=${BUILD_DIR:-build-peer}

if [ ! -f "$GGML_DIR/include/ggml.h" ]; then
  echo "llamacpp_peer: no ggml checkout at $GGML_DIR: git clone https://github.com/ggml-org/ggml $GGML_DIR && git -C $GGML_DIR checkout $PIN" >&2
  exit 1
fi
HEAD=$(git -C "$GGML_DIR" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$HEAD" != "$PIN" ] && [ "${ALLOW_OTHER_COMMIT:-0}" != 1 ]; then
  echo "llamacpp_peer: $GGML_DIR is at $HEAD, not the pinned $PIN (git -C $GGML_DIR checkout $PIN, or ALLOW_OTHER_COMMIT=1)" >&2
  exit 1
fi

PREFIX=$(realpath "$GGML_DIR")/install-peer
GGML_FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_LLAMAFILE=ON -DGGML_CPU_REPACK=ON -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "llamacpp_peer: building ggml ${HEAD:0:8} into $PREFIX" >&2
  # shellcheck disable=SC2086
  cmake -S "$GGML_DIR" -B "$GGML_DIR/build-peer" -G Ninja $GGML_FLAGS -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null
  cmake --build "$GGML_DIR/build-peer" -j "$JOBS" >/dev/null
  cmake --install "$GGML_DIR/build-peer" >/dev/null
  echo "llamacpp_peer: building llamacpp_peer in $BUILD_DIR/" >&2
  LAUNCHER=()
  if command -v ccache >/dev/null; then
    export CCACHE_BASEDIR=$PWD
    LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF \
    -DMOE_BUILD_BENCH=OFF -DMOE_LLAMACPP_PEER="$PREFIX" "${LAUNCHER[@]}" >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS" --target llamacpp_peer >/dev/null
fi

CFG_ARGS=()
for c in $CONFIGS; do CFG_ARGS+=(--config "$c"); done
DESC="ggml $(git -C "$GGML_DIR" log -1 --format='%h (%cs)' 2>/dev/null || echo "$HEAD") from https://github.com/ggml-org/ggml, CPU backend built with $GGML_FLAGS; the graph of llama.cpp's build_moe_ffn (src/llama-graph.cpp of https://github.com/ggml-org/llama.cpp) for these models: router mul_mat, soft_max (or sigmoid), argsort_top_k, get_rows of the weights, optional renormalisation (sum_rows, clamp, div) and scale, up and gate mul_mat_id, swiglu_split, down mul_mat_id, mul by the weights, the sum over the K expert views as a chain of adds, plus the shared expert where the model has one."
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE} "$BUILD_DIR/bin/llamacpp_peer" "${CFG_ARGS[@]}" --types "$TYPES" \
  --tokens "$TOKENS" --cold-tokens "${COLD_TOKENS:-1,8}" --threads "$THREADS" --min-time "$MIN_TIME" \
  --min-reps "${MIN_REPS:-10}" --max-case-time "${MAX_CASE_TIME:-30}" --out "$OUT" --peer-desc "$DESC"
echo "llamacpp_peer: wrote $OUT and ${OUT%.md}.json" >&2
