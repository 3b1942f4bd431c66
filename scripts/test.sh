#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine that has the Rust
# toolchain: formatting and lints, unit and property tests, the end-to-end
# tests against the real binaries, the loom model of the reserve path (then
# a check that the server binaries still start), and the fuzz targets.
#
# Usage: scripts/test.sh            (what CI runs through .ci/run)
#        SKIP_LINT=1 scripts/test.sh
#        FUZZ_SECONDS=300 scripts/test.sh   (longer fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

# System packages the tests need: redis-server, for the load generator's
# Redis target (its tests start a throwaway server of their own), and
# Debian's Chromium, which the browser test drives through playwright-core;
# Python 3, which runs the draw's verification script (docs/verify_draw.py).
need_packages=()
command -v redis-server >/dev/null || need_packages+=(redis-server)
command -v python3 >/dev/null || need_packages+=(python3)
[[ -x /usr/bin/chromium ]] || need_packages+=(chromium)
if ((${#need_packages[@]})); then
  step "installing ${need_packages[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_packages[@]}"
  # The package may start a system-wide daemon; the tests do not use it.
  $sudo service redis-server stop >/dev/null 2>&1 || true
fi

# PostgreSQL, for the drain's tests (tests/tests/sink.rs): each test runs a
# throwaway cluster of its own from /usr/lib/postgresql/*/bin, so any cluster
# the package starts is stopped.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  step "installing postgresql"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
  $sudo service postgresql stop >/dev/null 2>&1 || true
fi

if [[ -z "${SKIP_LINT:-}" ]]; then
  step "formatting"
  cargo fmt --all --check
  step "lints"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "browser test driver (playwright-core, from the lockfile)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

step "tests"
# `cargo test --workspace` builds every binary the end-to-end tests spawn,
# with the tests' own features; the tests use those as they are.
FLASHSALE_TESTS_PREBUILT=1 cargo test --workspace --locked

step "loom model of the reserve path (its own target directory)"
# The `loom` feature swaps the core's atomics for loom's, and a binary built
# with it panics outside a model. Its own target directory keeps any build
# with it from replacing a binary or a library in target/; it compiles only
# the core and its dependencies.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
  cargo test --release --locked -p flashsale-core --features loom --test loom_reserve

step "the server binaries still start"
scripts/check-start.sh

step "fuzz targets, ${FUZZ_SECONDS:-30}s each (frame decoder, log reader, HTTP request path, admin bodies)"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

step "all tests passed"
