#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 30), starting
# from the committed corpus in fuzz/corpus/<target>/ (seeds, and inputs
# earlier runs found, minimized) plus whatever earlier runs on this machine
# kept in fuzz/corpus-local/<target>/. Fails on the first crash, and prints
# the input that caused it.
#
# New inputs go to fuzz/corpus-local/<target>/, which git ignores: coverage
# accumulates between local runs and a run never changes the repository (a
# fresh checkout, as in CI, starts from the committed corpus alone). Crashes
# are kept in fuzz/artifacts/<target>/ (ignored too) to be reproduced.
# fuzz/README.md says how to fold the local corpus into the committed one.
#
# Usage: scripts/fuzz.sh [SECONDS]
#        FUZZ_SANITIZER=address scripts/fuzz.sh 600     (slower, finds more)
#
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
# The code under test forbids `unsafe`, so by default the targets are built
# without AddressSanitizer, which roughly halves the executions per second.
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

step "building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for target in $(cargo fuzz list); do
  step "fuzzing $target for ${seconds}s"
  mkdir -p "fuzz/corpus-local/$target" "fuzz/artifacts/$target"
  log="$scratch/$target.log"
  # The first corpus directory receives new inputs; the committed one is
  # only read.
  status=0
  cargo fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus-local/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(INFO: seed corpus|#[0-9]+.*DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$log" || true
  if ((status != 0)); then
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    printf '\n%s crashed:\n' "$target" >&2
    grep -v '^ ' "$log" | grep -A 12 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' | head -n 30 >&2 || true
    if [[ -n "$artifact" ]]; then
      printf '\ninput: %s\nreproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run %s %s\nshow it:   RUSTC_BOOTSTRAP=1 cargo fuzz fmt %s %s\n' \
        "$artifact" "$target" "$artifact" "$target" "$artifact" >&2
    fi
    exit 1
  fi
done

step "no crash in ${seconds}s per target"
