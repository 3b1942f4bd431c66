#!/usr/bin/env bash
# The per-user rate limit under a crowd: USERS honest buyers (default
# 20,000), each with a token of their own sending a reservation and a
# lookup, while one token sends 200 reservations as fast as they are
# answered, against flashsale-server --http --rate-limit-user 5/s,burst=10.
# Prints how many of the crowd's answers were 429 (the test fails unless
# none) and how many of the abusive token's requests were admitted (at most
# its burst plus what its bucket refilled meanwhile).
#
# Usage: bench/rate_limit.sh             (release build, 20,000 users)
#        USERS=5000 bench/rate_limit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FLASHSALE_RATE_LIMIT_USERS="${USERS:-20000}" \
  cargo test --release --locked -q -p flashsale-tests --test rate_limit \
  one_token_is_limited_while_a_crowd_of_buyers_is_not -- --nocapture --test-threads 1 \
  2>&1 | grep -E 'honest users|test result|panicked|assert'
