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
