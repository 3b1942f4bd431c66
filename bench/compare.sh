#!/usr/bin/env bash
# Ours vs the standard design (Redis + one Lua script), same client, same
# workloads, same run: prints one table of ratios.
#
# Usage: bench/compare.sh            (builds release binaries first)
#        QUICK=1 bench/compare.sh    (smaller workloads, for a smoke run)
#
# Installs redis-server from Debian's packages when it is missing, starts a
# throwaway Redis and a throwaway flashsale-server on free loopback ports, and
# stops both at the end. Redis runs with appendonly yes + appendfsync always,
# its closest match to our acknowledge-after-fdatasync.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
cleanup() {
  [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
  [[ -n "${redis_pid:-}" ]] && kill "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server ..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

cargo build --release --locked -q -p flashsale-server -p flashsale-loadgen
server=target/release/flashsale-server
loadgen=target/release/flashsale-loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
  --dir "$work" --daemonize no --logfile "$work/redis.log" &
redis_pid=$!

"$server" --listen 127.0.0.1:0 --data-dir "$work/data" \
  --sale burst:200 --sale storm:200 --sale million:200 --sale hammer:200 >"$work/addr" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q listening "$work/addr" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^flashsale-server listening on //p' "$work/addr")
[[ -n "$addr" ]] || { cat "$work/server.log"; echo "server did not start" >&2; exit 1; }
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

if [[ -n "${QUICK:-}" ]]; then
  million=100000 hammer=2s
else
  million=1000000 hammer=10s
fi

# name | sale | loadgen arguments
workloads=(
  "20k burst, 16 pipelined connections|burst|--users 20000 --connections 16"
  "20k connection storm, 2 processes|storm|--users 20000 --connect-per-user --processes 2 --concurrency 256"
  "$million users, 16 pipelined connections|million|--users $million --connections 16"
  "sold-out sale hammered for $hammer|hammer|--users 100000 --connections 16 --duration $hammer"
)

rows=()
for w in "${workloads[@]}"; do
  IFS='|' read -r name sale args <<<"$w"
  echo "== $name" >&2
  # shellcheck disable=SC2086
  "$loadgen" --quiet --addr "$addr" --sale "$sale" $args --json "$work/ours.json" >&2 || true
  # shellcheck disable=SC2086
  "$loadgen" --quiet --target "redis://127.0.0.1:$redis_port" --reset-capacity 200 --sale "$sale" $args \
    --json "$work/redis.json" >&2 || true
  rows+=("$name|$(cat "$work/ours.json" | tr -d '\n')|$(cat "$work/redis.json" | tr -d '\n')")
done

printf '%s\n' "${rows[@]}" | python3 bench/compare_table.py
