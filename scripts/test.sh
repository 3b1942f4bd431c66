#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine that has the Rust
# toolchain: formatting and lints, unit and property tests, the end-to-end
# tests against the real binaries, and the loom model of the reserve path.
#
# Usage: scripts/test.sh            (what CI runs through .ci/run)
#        SKIP_LINT=1 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [[ -z "${SKIP_LINT:-}" ]]; then
  step "formatting"
  cargo fmt --all --check
  step "lints"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "build (binaries the end-to-end tests spawn)"
cargo build --workspace --bins --locked

step "tests"
cargo test --workspace --locked

step "loom model of the reserve path"
cargo test --release --locked -p flashsale-server --features loom --test loom_reserve

step "all tests passed"
