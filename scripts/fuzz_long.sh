#!/usr/bin/env bash
# Long fuzz runs measured in CPU time, not wall time (see fuzz/README.md).
#
#   scripts/fuzz_long.sh TARGET CPU_SECONDS [CHUNK_SECONDS]     default chunk: 600
#
# On a shared machine a fuzzer at low priority gets only what the machine leaves over, so an
# hour of wall time can be minutes of fuzzing. This runs `scripts/fuzz.sh TARGET CHUNK_SECONDS`
# again and again on the same grown corpus (build-asan/corpus/TARGET), adding up the CPU time
# (user + sys) each chunk actually got, until the total reaches CPU_SECONDS. It resumes where an
# earlier call stopped: the chunks are recorded, one line each, in
# build-asan/logs/TARGET.long.tsv (UTC end time, wall s, CPU s, executions, cov, ft, corpus
# files, corpus bytes). It stops at the first finding (fuzz.sh keeps the input as a regression
# and fails). FUZZ_NICE is passed on (default 19 here). MOE_FUZZ_NO_BUILD=1 is set: build the
# `asan` preset first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/fuzz_long.sh TARGET CPU_SECONDS [CHUNK_SECONDS]" >&2
  exit 2
fi
t=$1
want=$2
chunk=${3:-600}
case "$want$chunk" in
  *[!0-9]*) echo "fuzz_long.sh: CPU_SECONDS and CHUNK_SECONDS must be whole numbers" >&2; exit 2 ;;
esac
build=build-asan
[ -x "$build/bin/fuzz_$t" ] || { echo "fuzz_long.sh: $build/bin/fuzz_$t not built (cmake --build --preset asan)" >&2; exit 2; }
tsv=$build/logs/$t.long.tsv
mkdir -p "$build/logs"
[ -f "$tsv" ] || printf 'end_utc\twall_s\tcpu_s\texecs\tcov\tft\tcorpus_files\tcorpus_bytes\n' > "$tsv"

cpu_total() { awk -F'\t' 'NR > 1 { s += $3 } END { printf "%.0f", s }' "$tsv"; }

while [ "$(cpu_total)" -lt "$want" ]; do
  rc=0
  MOE_FUZZ_NO_BUILD=1 FUZZ_JOBS=1 FUZZ_NICE=${FUZZ_NICE:-19} scripts/fuzz.sh "$t" "$chunk" \
    > /dev/null 2>&1 || rc=$?
  log=$build/logs/$t.log
  # "cpu: user U s, sys S s, wall W s" (bash time of the libFuzzer process).
  read -r user sys wall < <(sed -n 's/.*cpu: user \([0-9.]*\) s, sys \([0-9.]*\) s, wall \([0-9.]*\) s.*/\1 \2 \3/p' \
    "$build/logs/$t.time" | tail -n 1)
  execs=$(sed -n 's/.*stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  covft=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 | awk '{print $2 "\t" $4}')
  files=$(find "$build/corpus/$t" -type f | wc -l)
  bytes=$(du -sb "$build/corpus/$t" | cut -f1)
  printf '%s\t%s\t%.1f\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "${wall:-0}" \
    "$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { print u + s }')" "${execs:-0}" "${covft:-0	0}" "$files" "$bytes" >> "$tsv"
  echo "[$t] chunk done: $(tail -n 1 "$tsv" | cut -f2-); CPU so far $(cpu_total) of $want s"
  if [ "$rc" -ne 0 ]; then
    echo "[$t] fuzz.sh failed (exit $rc): see $log and fuzz/corpus/$t/regressions/" >&2
    exit 1
  fi
done
awk -F'\t' -v t="$t" 'NR > 1 { w += $2; c += $3; e += $4; cov = $5; ft = $6; f = $7; b = $8; n++ }
  END { printf "[%s] %d chunks: wall %.0f s, CPU %.0f s, %d executions (%.0f/CPU s), cov %s ft %s, corpus %d files %d bytes\n",
        t, n, w, c, e, (c > 0 ? e / c : 0), cov, ft, f, b }' "$tsv"
