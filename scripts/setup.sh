#!/usr/bin/env bash
# What Tidemark needs on a fresh machine (Debian, with the Rust toolchain, Python 3 and gcc),
# installed only when missing, so later runs cost nothing.
#
#   bash scripts/setup.sh build   what `cargo build` needs: cmake, OpenSSL, zlib and curl
#                                 headers (librdkafka is built from source with TLS and SASL;
#                                 with TLS on, its sources include curl.h even though curl
#                                 itself is off)
#   bash scripts/setup.sh test    the above, plus what the tests run: clang/lld (C filter
#                                 example), stunnel4 and openssl (Kafka over TLS), the queue
#                                 sinks' servers (redis, nats, rabbitmq), rclone, the wasm32
#                                 Rust target, the Tansu broker, the Python readers, Debian's
#                                 chromium and chromedriver (the console's browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-build}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(cmake pkg-config libssl-dev zlib1g-dev curl libcurl4-openssl-dev)
if [ "$mode" = test ]; then
  packages+=(clang lld stunnel4 openssl redis-server nats-server rabbitmq-server rclone
    chromium chromium-driver)
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "$mode" = test ] || exit 0

# The Kafka-protocol broker the Kafka tests start on loopback (about 25 minutes to build once).
tansu="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
if [ ! -x "$tansu" ]; then
  echo "building the Tansu broker (once)"
  cargo install tansu@0.6.0 --locked --features dynostore \
    --target-dir "${TANSU_BUILD_DIR:-$HOME/.cache/tidemark/tansu-build}" --root "$HOME/.cargo"
fi

# The same broker with sqlite storage, for the SASL/SCRAM tests: Tansu's in-memory storage
# keeps no SCRAM credentials (docs/KAFKA.md#security). Shares the build directory above, so
# most of it is built already.
tansu_libsql="${TANSU_LIBSQL_BIN:-$HOME/.cache/tidemark/tansu-libsql/bin/tansu}"
if [ ! -x "$tansu_libsql" ]; then
  echo "building the Tansu broker with sqlite storage (once)"
  cargo install tansu@0.6.0 --locked --features dynostore,libsql \
    --target-dir "${TANSU_BUILD_DIR:-$HOME/.cache/tidemark/tansu-build}" \
    --root "$HOME/.cache/tidemark/tansu-libsql"
fi

# The Rust target the filter SDK and the Rust filter examples are built for.
if command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed | grep -x wasm32-unknown-unknown >/dev/null; then
  echo "installing the Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# Independent readers from PyPI: fastavro, confluent-kafka with its registry client, and the
# standardwebhooks and cloudevents packages the webhook receiver verifies deliveries with, and
# DuckDB and pyarrow, which read the Parquet lake, pyiceberg and polars, which read the Iceberg
# tables, moto's S3 and SQS server, boto3 and requests, redis-py (Redis Streams), nats-py
# (JetStream), pika and aio-pika (RabbitMQ), selenium (drives chromium for the console).
if ! python3 -c 'import fastavro, confluent_kafka.schema_registry.avro, standardwebhooks, cloudevents.core, cryptography, duckdb, pyarrow, pyiceberg.catalog.sql, pyiceberg_core, polars, moto.server, boto3, requests, prometheus_client, redis, nats, pika, aio_pika, selenium' 2>/dev/null; then
  echo "installing tests/py/requirements.txt"
  python3 -m pip install --quiet --user -r tests/py/requirements.txt
fi
