#!/usr/bin/env bash
# Renders the routing report in headless Chromium: the page must load without console errors and
# produce a screenshot. Skips (exit 0) when /usr/bin/chromium is not installed.
#
# Usage: tests/report_browser_test.sh [MOE_TESTS_BINARY]
#   MOE_TESTS_BINARY      default: build/bin/moe_tests (the report comes from its ReportDemo test)
#   MOE_REPORT_METRICS    optional metrics.jsonl of a real run for the loss curves and heat maps
#   REPORT_SCREENSHOT     where to keep the screenshot (default: in a temp dir, removed)
#   REPORT_HTML           where to keep the report (default: in a temp dir, removed)
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$CHROMIUM" ]]; then
  echo "SKIP: $CHROMIUM is not installed (apt-get install -y chromium); report not rendered"
  exit 0
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

MOE_REPORT_DEMO_OUT="$html" "$bin" --gtest_filter='ReportDemo.*' >"$work/driver.log" 2>&1 || {
  echo "FAIL: the report driver failed:"
  cat "$work/driver.log"
  exit 1
}
[[ -s "$html" ]] || { echo "FAIL: no report written to $html"; exit 1; }

# Headless render. Chromium logs console messages to stderr with --enable-logging=stderr.
set +e
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --disable-default-apps \
  --user-data-dir="$profile" --hide-scrollbars --enable-logging=stderr --v=0 \
  --window-size=1400,2400 --screenshot="$png" "file://$html" >"$work/chromium.log" 2>&1
rc=$?
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
echo "PASS: report rendered ($(stat -c %s "$html") bytes of HTML," \
  "screenshot $(stat -c %s "$png") bytes${REPORT_SCREENSHOT:+ at $png})"
