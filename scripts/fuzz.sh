#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (see fuzz/README.md).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     default: all 60
#
# Builds the `asan` preset (clang++-16, ASan + UBSan, with the libFuzzer targets) unless
# MOE_FUZZ_NO_BUILD=1, then runs each target for SECONDS (-max_total_time) on its seeds, its
# regression inputs and the corpus it grew before (build-asan/corpus/TARGET, not committed),
# FUZZ_JOBS targets at a time (default: the number of cores), each line of libFuzzer's output
# prefixed with the target's name and kept in build-asan/logs/TARGET.log. FUZZ_NICE=N runs them at nice level N. FUZZ_KEEP_GOING=1 (for long
# runs) uses libFuzzer's fork mode, which keeps fuzzing after a finding instead of stopping.
#
# A crash, timeout, leak or out-of-memory input is copied to fuzz/corpus/TARGET/regressions/ as
# KIND-<sha1 prefix>: rename it after the bug, fix the bug at the root, and commit it; ctest then
# replays it in every build. The script fails if any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-all}
secs=${2:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
build=build-asan
# Symbolized stack traces in the reports.
if [ -x /usr/lib/llvm-16/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-16/bin/llvm-symbolizer}
fi

if [ "${MOE_FUZZ_NO_BUILD:-0}" != "1" ]; then
  cmake --preset asan >/dev/null
  cmake --build --preset asan -j "${JOBS:-$(nproc)}"
fi

targets=()
for src in fuzz/fuzz_*.cpp; do
  name=$(basename "$src" .cpp)
  name=${name#fuzz_}
  [ "$name" = util ] && continue
  if [ "$want" = all ] || [ "$want" = "$name" ]; then targets+=("$name"); fi
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no target named '$want' (targets: $(ls fuzz/fuzz_*.cpp | sed 's|fuzz/fuzz_||;s|\.cpp||' | grep -v '^util$' | tr '\n' ' '))" >&2
  exit 2
fi

run_one() {
  local t=$1 bin=$build/bin/fuzz_$t
  local corpus=$build/corpus/$t art=$build/artifacts/$t/ log=$build/logs/$t.log
  mkdir -p "$corpus" "$art" "$build/logs" "fuzz/corpus/$t/regressions"
  local dict=() rc=0
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  local keep=()
  [ "${FUZZ_KEEP_GOING:-0}" = 1 ] && keep=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  local TIMEFORMAT="cpu: user %U s, sys %S s, wall %R s"
  { time nice -n "${FUZZ_NICE:-0}" "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$art" "${dict[@]}" "${keep[@]}" \
      "$corpus" "fuzz/corpus/$t/seeds" "fuzz/corpus/$t/regressions" \
      > >(sed -u "s/^/[$t] /" | tee "$log") 2>&1; } 2> "$build/logs/$t.time" || rc=$?
  sleep 0.2  # let the last lines of the log through
  sed "s/^/[$t] /" "$build/logs/$t.time" | tee -a "$log"
  local found=0
  for f in "$art"*; do
    [ -f "$f" ] || continue
    local kind sha
    kind=$(basename "$f" | cut -d- -f1)
    sha=$(sha1sum "$f" | cut -c1-12)
    cp "$f" "fuzz/corpus/$t/regressions/$kind-$sha"
    rm -f "$f"
    echo "[$t] FINDING: fuzz/corpus/$t/regressions/$kind-$sha" >&2
    found=1
  done
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    echo "[$t] FAILED (exit $rc)" >&2
    return 1
  fi
  echo "[$t] ok"
}

mkdir -p "$build/logs"
rm -f "$build"/logs/*.status
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  (rc=0; run_one "$t" || rc=$?; echo "$rc" > "$build/logs/$t.status") &
done
wait
failed=()
for t in "${targets[@]}"; do
  [ "$(cat "$build/logs/$t.status" 2>/dev/null)" = 0 ] || failed+=("$t")
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: findings or failures in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s) ran ${secs}s each with no finding"
