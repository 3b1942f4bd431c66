# Helpers the bench scripts share; sourced, not run.

# Waits (bounded) for a line starting with $2 in file $1; prints the rest.
announced() {
  for _ in $(seq 300); do
    local line
    line=$(sed -n "s/^$2//p" "$1" 2>/dev/null | head -n1)
    if [[ -n "$line" ]]; then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "no '$2' in $1" >&2
  cat "$1" "$1.err" >&2 2>/dev/null || true
  return 1
}

# Sets $work, a scratch directory, and $pids, the background processes the
# script starts; on exit, whatever the reason, the processes are stopped
# and the directory removed.
scratch() {
  work=$(mktemp -d)
  pids=()
  trap cleanup_scratch EXIT
}

cleanup_scratch() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
