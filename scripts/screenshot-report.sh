#!/usr/bin/env bash
# Screenshot an HTML report the way a reader sees it: headless Chromium, a 1400-px-wide window,
# the interactive (bokeh) figures given time to draw.
#
#   scripts/screenshot-report.sh REPORT.html OUT.png [HEIGHT]
#
# Needs Debian's chromium (apt-get install chromium). HEIGHT: pixels (default 3400).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2; }
report=$1 out=$2 height=${3:-3400}
[ -f "$report" ] || { echo "screenshot-report.sh: no such report: $report" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot-report.sh: no Chromium (apt-get install chromium)" >&2; exit 1; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size="1400,$height" --virtual-time-budget=5000 \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" >/dev/null 2>&1
[ -s "$out" ] || { echo "screenshot-report.sh: Chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
