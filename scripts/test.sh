#!/usr/bin/env bash
# The whole test suite: installs what is missing, then formatting, lints and every test
# (unit, contract suites against real etcd and nats-server, end-to-end against `corral dev`
# and a multi-process cluster). CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
