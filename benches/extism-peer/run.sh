#!/usr/bin/env bash
# Tidemark's filter host vs a native closure vs Extism (see README.md). Builds the Extism
# plug-in for wasm32-unknown-unknown, then runs the host binary in release mode; arguments
# go to the binary (--events N, --runs N).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/extism-peer-target}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

cargo build --release --manifest-path "$here/plugin/Cargo.toml" --target wasm32-unknown-unknown
# wasmtime 49 (Extism 1.41's) declares rust-version 1.96 but builds with 1.95, this
# project's toolchain: hence --ignore-rust-version.
cargo build --release --ignore-rust-version --manifest-path "$here/Cargo.toml"

version() { # the version of crate $1 in $2's Cargo.lock
    awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print }' "$2" |
        paste -sd, -
}
echo "versions: extism $(version extism "$here/Cargo.lock"), wasmtime $(version wasmtime "$here/Cargo.lock")" \
    "(extism-pdk $(version extism-pdk "$here/plugin/Cargo.lock"))"

# Extism's call path builds (and drops) an error on every call when fuel is off; with
# RUST_BACKTRACE=1 in the environment each would capture a backtrace and Extism would be
# charged for it. RUST_LIB_BACKTRACE governs only those captures, not panics.
export RUST_LIB_BACKTRACE=0

exec "$CARGO_TARGET_DIR/release/extism-peer" \
    --plugin "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/extism_peer_plugin.wasm" "$@"
