#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real server processes
# on loopback, a real Kafka-protocol broker, fastavro as an independent Avro decoder).
# Installs what the tests need when it is missing (scripts/setup.sh); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export TANSU_BIN="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# `tidemark bench` runs the tidemark-bench binary from beside `tidemark` (tests/cli.rs).
cargo build --locked -p tidemark-benches --bin tidemark-bench
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
