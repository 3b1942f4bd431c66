#!/usr/bin/env bash
# The connection storm: USERS users (default 20,000), each opening its own
# connection, sending its Hello with its reservation behind it, reading the
# answer and closing. One throwaway release server; RUNS storms from the
# kernel's choice of client address interleaved with RUNS from SOURCES
# loopback addresses (`--source-addrs`); each storm against a sale of its
# own, so every one starts with 200 tickets. Prints every run's time to the
# last answer and errors, then the median of each kind.
#
# Usage: bench/storm.sh                    (builds release binaries first)
#        RUNS=9 CONCURRENCY=128 bench/storm.sh
#
# Knobs (environment): USERS, RUNS (5), PROCESSES (load generator worker
# processes, 2), CONCURRENCY (connections open at once per process, 256),
# SOURCES (addresses 127.0.0.1 to 127.0.0.SOURCES, 16).
#
# The machine's state moves the figures: connections the client side still
# holds in TIME_WAIT (about 60 s after each storm) make a single address's
# port search longer, or run it out of ports; `ss -s` shows how many.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-20000}
RUNS=${RUNS:-5}
PROCESSES=${PROCESSES:-2}
CONCURRENCY=${CONCURRENCY:-256}
SOURCES=${SOURCES:-16}

# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch

# Each process holds at most CONCURRENCY connections; the server all of
# them at once in the worst case.
ulimit -n 20000

cargo build --release --locked -q -p flashsale-server -p flashsale-loadgen
bin=${CARGO_TARGET_DIR:-target}/release


sales=()
for i in $(seq $((2 * RUNS))); do sales+=(--sale "storm$i:200"); done
"$bin/flashsale-server" --listen 127.0.0.1:0 --data-dir "$work/data" "${sales[@]}" \
  >"$work/server" 2>"$work/server.err" &
pids+=($!)
core=$(announced "$work/server" "flashsale-server listening on ")

echo "== $USERS users, one connection each, $PROCESSES processes x $CONCURRENCY at once; TIME_WAIT now: $(ss -s | grep -o 'timewait [0-9]*' || echo '?'); load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# One storm: prints "SECONDS ERRORS".
storm() {
  local sale=$1
  shift
  "$bin/flashsale-loadgen" --quiet --addr "$core" --sale "$sale" --users "$USERS" \
    --connect-per-user --processes "$PROCESSES" --concurrency "$CONCURRENCY" \
    --json "$work/report.json" "$@" >"$work/loadgen.out" 2>&1 || {
    cat "$work/loadgen.out" >&2
    return 1
  }
  python3 - "$work/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["counts"]
errors = c.get("connection_error", 0) + c.get("timeout", 0)
print(f"{r['time_to_last_answer_ms'] / 1000:.3f} {errors}")
EOF
}

: >"$work/one" && : >"$work/many"
n=0
for run in $(seq "$RUNS"); do
  n=$((n + 1))
  out=$(storm "storm$n")
  read -r one one_err <<<"$out"
  n=$((n + 1))
  out=$(storm "storm$n" --source-addrs "127.0.0.1-127.0.0.$SOURCES")
  read -r many many_err <<<"$out"
  echo "$one" >>"$work/one" && echo "$many" >>"$work/many"
  printf 'run %d: one address %s s (%d errors) | %d addresses %s s (%d errors)\n' \
    "$run" "$one" "$one_err" "$SOURCES" "$many" "$many_err"
done
median() { sort -g "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "median to the last answer: one address $(median "$work/one") s, $SOURCES addresses $(median "$work/many") s"
