#!/usr/bin/env bash
# Starts each flashsale-server binary given (by default, whichever of
# target/debug and target/release holds one) on a temporary data directory
# and a free loopback port, waits until it listens, stops it with SIGTERM
# and expects exit status 0.
#
# The test script runs it after the loom step: a server whose core was built
# with the `loom` feature panics at its first atomic, outside any loom model,
# so a loom build that replaced a binary in target/ shows here.
#
# Usage: scripts/check-start.sh [BINARY...]
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
binaries=("$@")
if ((${#binaries[@]} == 0)); then
  for profile in debug release; do
    [[ -x "$target/$profile/flashsale-server" ]] && binaries+=("$target/$profile/flashsale-server")
  done
fi
if ((${#binaries[@]} == 0)); then
  echo "no flashsale-server binary in $target/debug or $target/release" >&2
  exit 1
fi

scratch="$(mktemp -d)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT

for binary in "${binaries[@]}"; do
  rm -rf "$scratch/data"
  "$binary" --listen 127.0.0.1:0 --threads 1 --data-dir "$scratch/data" --sale check:1 \
    >"$scratch/stdout" 2>"$scratch/stderr" &
  pid=$!
  # Generous: a loaded 2-core machine may be slow to start anything.
  for _ in $(seq 600); do
    grep -q '^flashsale-server listening on ' "$scratch/stdout" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '^flashsale-server listening on ' "$scratch/stdout"; then
    printf '%s did not start:\n' "$binary" >&2
    head -n 20 "$scratch/stderr" >&2
    exit 1
  fi
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
  pid=""
  if ((status != 0)); then
    printf '%s exited with %d after SIGTERM:\n' "$binary" "$status" >&2
    head -n 20 "$scratch/stderr" >&2
    exit 1
  fi
  printf '%s starts and stops cleanly\n' "$binary"
done
