#!/usr/bin/env bash
# A crowd of open pages on one machine: USERS browser-like users (default
# 100,000), each holding the sale's event stream open through a gateway,
# all pressing buy at the opening. Prints the load generator's outcome and
# the memory and CPU per connection of each tier (server, gateways, load
# generator), read from /proc at three moments: before the streams open,
# with every stream open, and after the burst (streams still held).
#
# Usage: bench/crowd.sh                       (builds release binaries first)
#        USERS=20000 GATEWAYS=2 bench/crowd.sh   (a smaller crowd)
#
# Knobs (environment): USERS, GATEWAYS (6), PROCESSES (load generator
# workers, 8), SOURCES (loopback source addresses 127.0.0.1..N, 16),
# CAPACITY (200), CONCURRENCY (streams being opened, and buys in flight,
# per worker; 256), START_IN (time to open every stream before t0; 90s).
#
# Every process here may hold at most 20,000 open files: a gateway holds
# USERS/GATEWAYS streams plus the buys in flight, a load generator worker
# USERS/PROCESSES streams plus CONCURRENCY buys (it checks that itself).
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-100000}
GATEWAYS=${GATEWAYS:-6}
PROCESSES=${PROCESSES:-8}
SOURCES=${SOURCES:-16}
CAPACITY=${CAPACITY:-200}
CONCURRENCY=${CONCURRENCY:-256}
START_IN=${START_IN:-90s}

# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch

cargo build --release --locked -q -p flashsale-server -p flashsale-gateway -p flashsale-loadgen
bin=${CARGO_TARGET_DIR:-target}/release


head -c 48 /dev/urandom | base64 >"$work/secret"
opens_at=$(( $(date +%s%3N) + 5000 ))
"$bin/flashsale-server" --listen 127.0.0.1:0 --data-dir "$work/data" \
  --sale "drop:$CAPACITY:$opens_at" >"$work/server" 2>"$work/server.err" &
pids+=($!)
server_pid=$!
core=$(announced "$work/server" "flashsale-server listening on ")

gateway_pids=()
targets=()
for i in $(seq "$GATEWAYS"); do
  "$bin/flashsale-gateway" --core "$core" --http 127.0.0.1:0 --jwt-secret-file "$work/secret" \
    --http-max-connections 19800 --http-max-connections-per-ip 19800 --http-max-streams 19800 \
    --http-stream-lifetime 30m >"$work/gateway-$i" 2>"$work/gateway-$i.err" &
  pids+=($!)
  gateway_pids+=($!)
  targets+=("http://$(announced "$work/gateway-$i" "flashsale-gateway http on ")")
done
targets_csv=$(IFS=,; echo "${targets[*]}")

samples=$work/samples
tiers() {
  echo "server:$server_pid"
  for p in "${gateway_pids[@]}"; do echo "gateway:$p"; done
  if [[ -n "${loadgen_pid:-}" ]]; then
    echo "loadgen:$loadgen_pid"
    pgrep -P "$loadgen_pid" | sed 's/^/loadgen:/'
  fi
}
sample() {
  # shellcheck disable=SC2046
  python3 bench/crowd_table.py sample "$samples" "$1" $(tiers)
}
# Waits (bounded by the run) until every worker printed $1.
all_say() {
  while kill -0 "$loadgen_pid" 2>/dev/null; do
    local n
    n=$(grep -c "$1" "$work/loadgen.err" 2>/dev/null || true)
    (( ${n:-0} >= PROCESSES )) && return 0
    sleep 0.2
  done
  return 1
}

sample before
echo "== $USERS users, $GATEWAYS gateways, $PROCESSES load generator processes, source addresses 127.0.0.1-127.0.0.$SOURCES" >&2
"$bin/flashsale-loadgen" --quiet --hold-streams --targets "$targets_csv" \
  --source-addrs "127.0.0.1-127.0.0.$SOURCES" --jwt-secret-file "$work/secret" \
  --sale drop --users "$USERS" --processes "$PROCESSES" --concurrency "$CONCURRENCY" \
  --start-in "$START_IN" --hold-after 5s --deadline 120s --timeout 60s \
  --json "$work/report.json" >"$work/loadgen.out" 2>"$work/loadgen.err" &
loadgen_pid=$!
pids+=("$loadgen_pid")
all_say "streams open:" && sample open
all_say "streams told:" && sample after
status=0
wait "$loadgen_pid" || status=$?

cat "$work/loadgen.out"
grep -v '^\[worker [0-9]*\] streams ' "$work/loadgen.err" >&2 || true
python3 bench/crowd_table.py table "$samples" "$USERS"
if (( status != 0 )); then
  for i in $(seq "$GATEWAYS"); do
    echo "-- gateway $i, its last warnings:"
    grep -iE "warn|error" "$work/gateway-$i.err" | tail -n 3 || true
  done
fi
echo "load generator exit status: $status"
exit "$status"
