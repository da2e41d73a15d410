#!/usr/bin/env bash
# Renders the routing report in headless Chromium: the page must load without console errors,
# every section must hold a plot with data, and a screenshot is taken. Fails when
# /usr/bin/chromium is not installed (scripts/install_deps.sh installs it).
#
# The report is a real one: `moe inspect --data --report` on a small MoE trained by the
# InspectReport test of moe_tests (REPORT_SOURCE=demo uses the synthetic ReportDemo report).
#
# Usage: tests/report_browser_test.sh [MOE_TESTS_BINARY]
#   MOE_TESTS_BINARY      default: build/bin/moe_tests
#   REPORT_SCREENSHOT     where to keep the screenshot (default: in a temp dir, removed)
#   REPORT_HTML           where to keep the report (default: in a temp dir, removed)
#   REPORT_FILE           render this existing report instead of making one
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$CHROMIUM" ]]; then
  echo "FAIL: $CHROMIUM is not installed (apt-get install -y chromium); report not rendered"
  exit 1
fi

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/bin/moe_tests}
if [[ ! -x "$bin" ]]; then
  echo "FAIL: test binary $bin not found; build it first" \
    "(cmake --build --preset release --target moe_tests)"
  exit 1
fi

work=$(mktemp -d)
profile=$(mktemp -d)
cleanup() { rm -rf "$work" "$profile"; }
trap cleanup EXIT

html=${REPORT_HTML:-$work/report.html}
png=${REPORT_SCREENSHOT:-$work/report.png}
rm -f "$png"

if [[ -n "${REPORT_FILE:-}" ]]; then
  cp "$REPORT_FILE" "$html"
elif [[ "${REPORT_SOURCE:-inspect}" == demo ]]; then
  MOE_REPORT_DEMO_OUT="$html" "$bin" --gtest_filter='ReportDemo.*' >"$work/driver.log" 2>&1 || {
    echo "FAIL: the report driver failed:"; cat "$work/driver.log"; exit 1; }
else
  MOE_INSPECT_REPORT_OUT="$html" "$bin" --gtest_filter='InspectReport.DataReportJsonAndText' \
    >"$work/driver.log" 2>&1 || {
    echo "FAIL: the report driver failed:"; cat "$work/driver.log"; exit 1; }
fi
[[ -s "$html" ]] || { echo "FAIL: no report written to $html"; exit 1; }

# Headless render. Chromium logs console messages to stderr with --enable-logging=stderr.
set +e
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --disable-default-apps \
  --user-data-dir="$profile" --hide-scrollbars --enable-logging=stderr --v=0 \
  --window-size=1400,2400 --screenshot="$png" "file://$html" >"$work/chromium.log" 2>&1
rc=$?
# The DOM as Chromium parsed it, to check that every plot has data.
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --disable-default-apps \
  --user-data-dir="$profile" --dump-dom "file://$html" >"$work/dom.html" 2>>"$work/chromium.log"
rc2=$?
[[ $rc -eq 0 ]] && rc=$rc2
set -e
if [[ $rc -ne 0 ]]; then
  echo "FAIL: chromium exited with $rc:"
  tail -n 40 "$work/chromium.log"
  exit 1
fi
magic=$(head -c 8 "$png" 2>/dev/null | od -An -tx1 | tr -d ' \n')
if [[ ! -s "$png" || "$magic" != "89504e470d0a1a0a" ]]; then
  echo "FAIL: no PNG screenshot at $png"
  tail -n 40 "$work/chromium.log"
  exit 1
fi
# The page has no scripts, so any console message (an uncaught error, a CSP violation, a failed
# load; Chromium logs them as INFO:CONSOLE or ERROR:CONSOLE) fails the test.
errors='Uncaught|:CONSOLE|Refused to|Content Security Policy|net::ERR_'
if grep -E "$errors" "$work/chromium.log" >"$work/errors.log"; then
  echo "FAIL: the page logged errors:"
  cat "$work/errors.log"
  exit 1
fi
# Every section of the report holds at least one SVG plot with marks in it (rects, paths, circles
# or coloured token spans), and none says it has no data.
python3 - "$work/dom.html" <<'PY' || exit 1
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
sections = re.findall(r'<section[^>]*id="([^"]+)"[^>]*>(.*?)</section>', dom, re.S)
if len(sections) < 6:
    print(f"FAIL: only {len(sections)} sections in the rendered DOM"); sys.exit(1)
bad = []
for sid, body in sections:
    marks = len(re.findall(r"<(rect|path|circle|polyline|line)\b", body))
    toks = len(re.findall(r'class="tok', body))
    if "class=\"empty" in body or (marks < 3 and toks == 0):
        bad.append(f"{sid} (marks {marks}, tokens {toks})")
if bad:
    print("FAIL: sections without plotted data: " + ", ".join(bad)); sys.exit(1)
print(f"every section has data: " + ", ".join(s for s, _ in sections))
PY
echo "PASS: report rendered ($(stat -c %s "$html") bytes of HTML," \
  "screenshot $(stat -c %s "$png") bytes${REPORT_SCREENSHOT:+ at $png})"
