#!/usr/bin/env bash
# A fair draw at scale: USERS entrants (default 100,000) spread over a
# sale's 2-second draw window, then the published draw audited and every
# entrant's own result checked. Starts a release server with a sale of
# CAPACITY tickets whose window opens a few seconds ahead, runs
# `flashsale-loadgen --draw` against it, and prints how many entries were
# answered, how long after the window closed the draw was published, and
# how long until every result was checked.
#
# Usage: bench/draw.sh                        (builds release binaries first)
#        USERS=20000 PROCESSES=1 bench/draw.sh
#
# Knobs (environment): USERS, CAPACITY (200), WINDOW_MS (2000), LEAD_MS
# (time before the window opens, 4000), PROCESSES (load generator worker
# processes, 2), CONNECTIONS (pipelined native connections in all, 8).
#
# Native pipelining needs few connections: CONNECTIONS sockets carry every
# entry and every lookup, far below the 20,000 open files a process may
# hold here.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-100000}
CAPACITY=${CAPACITY:-200}
WINDOW_MS=${WINDOW_MS:-2000}
LEAD_MS=${LEAD_MS:-4000}
PROCESSES=${PROCESSES:-2}
CONNECTIONS=${CONNECTIONS:-8}

# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch

cargo build --release --locked -q -p flashsale-server -p flashsale-loadgen
bin=${CARGO_TARGET_DIR:-target}/release


opens_at=$(( $(date +%s%3N) + LEAD_MS ))
"$bin/flashsale-server" --listen 127.0.0.1:0 --data-dir "$work/data" \
  --sale "drop:$CAPACITY:$opens_at" --draw-window-ms "$WINDOW_MS" \
  >"$work/server" 2>"$work/server.err" &
pids+=($!)
core=$(announced "$work/server" "flashsale-server listening on ")

echo "== $USERS entrants, $CAPACITY tickets, a ${WINDOW_MS} ms window; load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
status=0
"$bin/flashsale-loadgen" --quiet --draw --addr "$core" --sale drop --users "$USERS" \
  --processes "$PROCESSES" --connections "$CONNECTIONS" --start-in 1s --deadline 60s \
  --json "$work/report.json" >"$work/loadgen.out" 2>"$work/loadgen.err" || status=$?
cat "$work/loadgen.out"
cat "$work/loadgen.err" >&2
python3 - "$work/report.json" <<'EOF'
import json, sys
draw = json.load(open(sys.argv[1]))["draw"]
ms = lambda v: "never" if v is None else f"{v:.0f} ms"
print(f"every entry answered: {draw['entries_answered']} of {draw['users']} entered "
      f"(p50 {draw['entry_latency_ms']['p50']:.2f} ms, p99 {draw['entry_latency_ms']['p99']:.2f} ms)")
print(f"draw published {ms(draw['published_after_close_ms'])} after the window closed")
print(f"every result checked within {ms(draw['results_checked_after_close_ms'])} of the close "
      f"({draw['counted']['winners_told']} winners, {draw['counted']['losers_told']} losers); audit {draw['audit']}")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit "$status"
