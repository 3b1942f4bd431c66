#!/usr/bin/env bash
# A single node against a three-node cluster on this machine, same client,
# same workloads, interleaved: durable wins per second, sold-out answers per
# second on the leader, and the time from a leader's kill -9 to a new leader
# serving (flashsale-torture --cluster, release build).
#
# Usage: bench/cluster.sh
#   RUNS=3         pairs of (single node, cluster) runs; medians are printed
#   WINS=200000    users (and tickets) of the durable-wins workload
#   HAMMER=10s     how long the sold-out sale is hammered
#   TRIALS=50      leader kills for the failover figures
#
# All three nodes run on this machine's two cores, with the load generator:
# the cluster pays for three logs and three fdatasyncs per batch, plus the
# replication round, on the same CPUs and disk as the single node.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-3}
wins=${WINS:-200000}
hammer=${HAMMER:-10s}
trials=${TRIALS:-50}

# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch

cargo build --release --locked -q -p flashsale-server -p flashsale-loadgen -p flashsale-tests \
  --bin flashsale-server --bin flashsale-loadgen --bin flashsale-torture
server=target/release/flashsale-server
loadgen=target/release/flashsale-loadgen
key=bench-cluster-key-0123456789
sales=(--sale "wins:$wins" --sale hammer:200)

# Ports below the ephemeral range, so a node keeps its replication port.
cluster_ports() {
  python3 - <<'EOF'
import random, socket
random.seed()
ports = []
while len(ports) < 3:
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        ports.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports)))
EOF
}

# The start functions below run in the script's own shell (not in `$(...)`,
# whose subshell would keep the pids from `stop_all`) and leave the native
# address to load in $addr.

# Starts a single node in $1.
single() {
  "$server" --listen 127.0.0.1:0 --data-dir "$1" --api-key "$key" "${sales[@]}" \
    >"$1.out" 2>"$1.out.err" &
  pids+=($!)
  addr=$(announced "$1.out" "flashsale-server listening on ")
}

# Starts three nodes under $1, and waits for the leader to serve.
cluster() {
  local spec addrs=() https=()
  spec=$(cluster_ports)
  for n in 1 2 3; do
    "$server" --node-id "$n" --cluster "$spec" --listen 127.0.0.1:0 --http 127.0.0.1:0 --demo \
      --data-dir "$1/node$n" --api-key "$key" "${sales[@]}" >"$1/node$n.out" 2>"$1/node$n.out.err" &
    pids+=($!)
  done
  for n in 1 2 3; do
    addrs+=("$(announced "$1/node$n.out" "flashsale-server listening on ")")
    https+=("$(announced "$1/node$n.out" "flashsale-server http on ")")
  done
  for _ in $(seq 300); do
    for n in 0 1 2; do
      if curl -s "http://${https[$n]}/healthz" | grep -q '"role":"leader"'; then
        # The leader serves once it has built its sales from the log.
        if curl -s "http://${https[$n]}/api/sales/hammer" | grep -q '"sale"'; then
          addr=${addrs[$n]}
          return 0
        fi
      fi
    done
    sleep 0.1
  done
  echo "no leader" >&2
  return 1
}

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# Runs the two workloads against $1, writing $2.wins.json and $2.hammer.json.
workloads() {
  "$loadgen" --quiet --addr "$1" --api-key "$key" --sale wins --users "$wins" --connections 16 \
    --json "$2.wins.json" >&2
  "$loadgen" --quiet --addr "$1" --api-key "$key" --sale hammer --users 100000 --connections 16 \
    --duration "$hammer" --json "$2.hammer.json" >&2
}

for run in $(seq "$runs"); do
  echo "== run $run: single node" >&2
  mkdir -p "$work/single$run"
  single "$work/single$run/data"
  workloads "$addr" "$work/single$run"
  stop_all
  echo "== run $run: three-node cluster" >&2
  mkdir -p "$work/cluster$run"
  cluster "$work/cluster$run"
  workloads "$addr" "$work/cluster$run"
  stop_all
done

echo "== failover: $trials leader kills (flashsale-torture --cluster)" >&2
target/release/flashsale-torture --cluster --trials "$trials" --users 200 --capacity 20000 \
  --deadline 1200 --server "$server" >"$work/torture.out"

python3 - "$work" "$runs" <<'EOF'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def med(kind, load, key="answers_per_sec"):
    return statistics.median(
        json.load(open(f"{work}/{kind}{r}.{load}.json"))[key] for r in range(1, runs + 1))
def ok(kind, load):
    return all(json.load(open(f"{work}/{kind}{r}.{load}.json"))["ok"] for r in range(1, runs + 1))
rows = [("durable wins/s", "wins"), ("sold-out answers/s", "hammer")]
print(f"{'medians of ' + str(runs) + ' runs':<22} {'single node':>12} {'3-node':>12} {'3-node/single':>14}  invariants")
for name, load in rows:
    s, c = med("single", load), med("cluster", load)
    verdict = "ok" if ok("single", load) and ok("cluster", load) else "VIOLATED"
    print(f"{name:<22} {s:>12.0f} {c:>12.0f} {c / s:>13.0%}  {verdict}")
for line in open(f"{work}/torture.out"):
    if line.startswith(("trials: ", "cluster kills: ")):
        print(line.rstrip())
EOF
