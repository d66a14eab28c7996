#!/usr/bin/env bash
# Long mode of the fault suite (tests/src/faults): every scenario --runs times with different
# seeds over real etcd, NATS, coordinators and agents; writes the table of figures into
# docs/RELIABILITY.md and the per-run reports (JSON lines) to target/faults-runs.jsonl.
#   scripts/faults.sh --runs 20 [--seed 1] [--scenario F1 ...]
# Needs root (network namespaces, iptables) and scripts/install-deps.sh --test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
scripts/install-deps.sh --test
cargo build --workspace --bins
mkdir -p "$CARGO_TARGET_DIR"
"$CARGO_TARGET_DIR/debug/corral-faults" --doc docs/RELIABILITY.md "$@" | tee "$CARGO_TARGET_DIR/faults-runs.jsonl"
