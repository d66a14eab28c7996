#!/usr/bin/env bash
# Fails if the committed generated modules (src/corral/v1/) differ from what gen_protos.sh makes
# from ../../proto now. Fix with: scripts/gen_protos.sh (same grpcio-tools / mypy-protobuf pins).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$here/scripts/gen_protos.sh" "$tmp" >/dev/null 2>&1 || {
  echo "check_protos: generation failed:" >&2
  "$here/scripts/gen_protos.sh" "$tmp" >&2 || true
  exit 1
}
if ! diff -ru --exclude=__pycache__ "$here/src/corral/v1" "$tmp/corral/v1"; then
  echo "check_protos: src/corral/v1 is stale; run sdk/python/scripts/gen_protos.sh and commit the result" >&2
  exit 1
fi
echo "check_protos: generated stubs are up to date"
