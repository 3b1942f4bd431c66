#!/usr/bin/env bash
# The HTTP front against the box's HTTP ceiling: nginx answering `return 200`
# with nothing behind it. Same client (wrk, 2 threads, 10 s, --latency), same
# run, interleaved, at 100, 1,000 and 10,000 connections; prints one table.
#
# Usage: bench/http.sh                 (builds release binaries first)
#        CONNS="1000" REPEAT=3 bench/http.sh
#
# Environment: CONNS (connection counts, default "100 1000 10000"), REPEAT
# (runs of each pair, default 1), DURATION (of each wrk run, default 10s),
# TOKENS_COUNT (tokens minted, default 1000000), SERVER (another
# flashsale-server binary to measure, such as an earlier build).
#
# Every request to either server is the same `POST /api/sales/bench/reserve`
# with `Authorization: Bearer <token>`, the next of TOKENS pre-minted tokens
# (one user each), so flashsale verifies a distinct signed token per request.
# The sale has 200 tickets: it sells out within the first milliseconds, and
# from then on every answer is 410 sold_out, the flash sale's steady state.
# nginx reads the same requests and ignores the header.
#
# Installs nginx-light and wrk from Debian's packages when missing, starts a
# throwaway flashsale-server and a throwaway nginx on free loopback ports,
# and stops both at the end. With REPEAT > 1 each figure is the median of
# the repeats (each repeat runs ours, then nginx).
set -euo pipefail
cd "$(dirname "$0")/.."

conns_list=${CONNS:-"100 1000 10000"}
repeat=${REPEAT:-1}
duration=${DURATION:-10s}
token_count=${TOKENS_COUNT:-1000000}
threads=2

work=$(mktemp -d)
cleanup() {
  [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
  [[ -n "${nginx_pid:-}" ]] && kill "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  echo "installing nginx-light and wrk ..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# 10,000 connections need 10,000 descriptors on each side.
ulimit -n 20000

cargo build --release --locked -q -p flashsale-server -p flashsale-tests --bin flashsale-server \
  --bin flashsale-mint-tokens
server=${SERVER:-target/release/flashsale-server}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

head -c 32 /dev/urandom | xxd -p -c 64 | tr -d '\n' >"$work/jwt"
echo "minting $token_count tokens ..." >&2
target/release/flashsale-mint-tokens --secret-file "$work/jwt" --count "$token_count" --out "$work/tokens"

"$server" --listen 127.0.0.1:0 --data-dir "$work/data" --sale bench:200 \
  --http 127.0.0.1:0 --jwt-secret-file "$work/jwt" \
  --http-max-connections 12000 --http-max-connections-per-ip 12000 --http-max-in-flight 12000 \
  >"$work/addr" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q 'http on' "$work/addr" 2>/dev/null && break
  sleep 0.1
done
ours=$(sed -n 's/^flashsale-server http on //p' "$work/addr")
[[ -n "$ours" ]] || { cat "$work/server.log"; echo "server did not start" >&2; exit 1; }

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile 20000;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port backlog=4096 reuseport;
    location / { return 200; }
  }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr" &
nginx_pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break
  sleep 0.1
done

# One wrk run: prints "REQ_PER_S P99_MS NON_2XX SOCKET_ERRORS".
bench() {
  local url=$1 conns=$2 out
  out=$(TOKENS="$work/tokens" WRK_THREADS=$threads wrk -t"$threads" -c"$conns" -d"$duration" --latency \
    -s bench/http_tokens.lua "$url" 2>&1)
  echo "$out" >>"$work/wrk.log"
  awk '
    function ms(v) {
      if (v ~ /us$/) return v * 0.001;
      if (v ~ /ms$/) return v + 0;
      if (v ~ /m$/) return v * 60000;
      return v * 1000;
    }
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $5 }
    /Socket errors:/ { errors = $4 + $6 + $8 + $10 }
    END { printf "%.0f %.2f %d %d\n", rps, p99, non2xx, errors }
  ' <<<"$out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-7s | %-39s | %-23s | %s\n' conns "flashsale reserve" 'nginx `return 200`' ratio
printf '%s\n' "--------+-----------------------------------------+-------------------------+------"
for conns in $conns_list; do
  : >"$work/ours" && : >"$work/nginx.runs"
  for _ in $(seq "$repeat"); do
    echo "== $conns connections: flashsale" >&2
    bench "http://$ours" "$conns" >>"$work/ours"
    echo "== $conns connections: nginx" >&2
    bench "http://127.0.0.1:$nginx_port" "$conns" >>"$work/nginx.runs"
  done
  o_rps=$(cut -d' ' -f1 "$work/ours" | median)
  o_p99=$(cut -d' ' -f2 "$work/ours" | median)
  o_non2xx=$(cut -d' ' -f3 "$work/ours" | median)
  o_err=$(cut -d' ' -f4 "$work/ours" | median)
  n_rps=$(cut -d' ' -f1 "$work/nginx.runs" | median)
  n_p99=$(cut -d' ' -f2 "$work/nginx.runs" | median)
  n_err=$(cut -d' ' -f4 "$work/nginx.runs" | median)
  awk -v c="$conns" -v orps="$o_rps" -v op="$o_p99" -v on="$o_non2xx" -v oe="$o_err" \
    -v nrps="$n_rps" -v np="$n_p99" -v ne="$n_err" -v d="$duration" 'BEGIN {
      sold = (orps > 0) ? 100 * on / (orps * (d + 0)) : 0;
      if (sold > 100) sold = 100;
      printf "%-7s | %6.1fk, p99 %7.1f ms (%3.0f%% sold out) | %6.1fk, p99 %7.1f ms | %3.0f%%\n",
        c, orps / 1000, op, sold, nrps / 1000, np, 100 * orps / nrps;
      if (oe + ne > 0) printf "        socket errors: flashsale %d, nginx %d\n", oe, ne;
    }'
done
echo "(wrk -t$threads -c N -d $duration --latency, a distinct token per request; 200 tickets, the rest sold out)"
