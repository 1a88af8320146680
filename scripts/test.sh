#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real server processes
# on loopback, a real Kafka-protocol broker, fastavro as an independent Avro decoder).
# Installs what the tests need when it is missing; later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages to build librdkafka from source (rdkafka's cmake-build feature), and clang
# with lld (wasm-ld) for the C filter example (plugins/tests/guest_examples.rs).
missing=()
for pkg in cmake libcurl4-openssl-dev libssl-dev zlib1g-dev clang lld; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Kafka-protocol broker the Kafka tests start on loopback (about 25 minutes to build once).
tansu="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
if [ ! -x "$tansu" ]; then
  echo "building the Tansu broker (once)"
  cargo install tansu@0.6.0 --locked --features dynostore \
    --target-dir "${TANSU_BUILD_DIR:-$HOME/.cache/tidemark/tansu-build}" --root "$HOME/.cargo"
fi
export TANSU_BIN="$tansu"

# The Rust target the filter SDK and the Rust filter examples are built for.
if command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed | grep -x wasm32-unknown-unknown >/dev/null; then
  echo "installing the Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# Independent readers from PyPI: fastavro, confluent-kafka with its registry client, and the
# standardwebhooks and cloudevents packages the webhook receiver verifies deliveries with, and
# DuckDB and pyarrow, which read the Parquet lake, and moto's S3 server for a lake on S3.
if ! python3 -c 'import fastavro, confluent_kafka.schema_registry.avro, standardwebhooks, cloudevents.core, cryptography, duckdb, pyarrow, moto.server, boto3' 2>/dev/null; then
  echo "installing tests/py/requirements.txt"
  python3 -m pip install --quiet --user -r tests/py/requirements.txt
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
