#!/usr/bin/env bash
# The whole test suite: installs what is missing, then formatting, lints and every test
# (unit, contract suites against real etcd and nats-server, end-to-end against `corral dev`
# and a multi-process cluster), then a short fuzzing run. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins
if docker info >/dev/null 2>&1; then
  echo "== sandbox images (built locally when missing)"
  deploy/images/build.sh
  # With an engine present, the Docker halves of the suites must run: they fail, never skip.
  export CORRAL_REQUIRE_DOCKER=1
else
  echo "== no Docker engine: tests that need Docker will fail (set up Docker to run them)"
fi
echo "== Python SDK"
sdk/python/scripts/test.sh -q
echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
echo "== fuzzing (short: 15 s per target; scripts/fuzz.sh --seconds 3600 is the long run)"
scripts/fuzz.sh
