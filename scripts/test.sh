#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real server processes
# on loopback, fastavro as an independent Avro decoder).
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests decode our records with fastavro, fetched from PyPI once.
if ! python3 -c 'import fastavro' 2>/dev/null; then
  echo "installing fastavro (independent Avro decoder used by the tests)"
  python3 -m pip install --quiet --user 'fastavro>=1.9'
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
