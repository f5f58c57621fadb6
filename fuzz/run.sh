#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 30) from its committed corpus; any crash,
# panic or leak fails the run. New inputs go to a temporary directory, so the committed corpus
# stays small: add an input to corpus/<target>/ by hand when it covers something new.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$t" "$scratch/$t"
  echo "-- $t (${secs}s)"
  log="$scratch/$t.log"
  if ! cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "error: fuzz target $t failed (the crashing input is under fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log" || true
done
