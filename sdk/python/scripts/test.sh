#!/usr/bin/env bash
# The Python SDK's test suite, as CI runs it from a fresh clone:
#   1. a venv at ${CORRAL_PY_VENV:-/var/cache/corral/venv} (created if missing),
#   2. pip install -e sdk/python[test],
#   3. check_protos.sh (committed stubs match proto/),
#   4. pytest against a real `corral dev` (binary: $CORRAL_BIN, else target/debug/corral or
#      $CARGO_TARGET_DIR/debug/corral; build it first with `cargo build -p corral-cli -p corral-init`).
# Extra arguments go to pytest.
set -euo pipefail
sdk="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CORRAL_PY_VENV:-/var/cache/corral/venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating venv $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" || {
    echo "python venv creation failed; on Debian/Ubuntu install python3-venv" >&2
    exit 1
  }
fi
echo "== pip install -e sdk/python[test]"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$sdk[test]"

echo "== check generated protobuf stubs"
PYTHON="$venv/bin/python" "$sdk/scripts/check_protos.sh"

echo "== pytest (Python SDK)"
cd "$sdk"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
