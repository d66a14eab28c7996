#!/usr/bin/env bash
# Regenerates the committed gRPC/protobuf modules of the Python SDK from ../../proto.
#
# The proto package `corral.v1` is generated straight into the Python package `corral.v1`
# (src/corral/v1/), so the `from corral.v1 import ..._pb2` imports protoc writes work as they are.
#
#   scripts/gen_protos.sh            # writes src/corral/v1/
#   scripts/gen_protos.sh OUT_ROOT   # writes OUT_ROOT/corral/v1/ (used by check_protos.sh)
#
# Needs grpcio-tools and mypy-protobuf (the `test` extra pins the versions whose output is
# committed). Uses $PYTHON, else python3.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
proto_root="$(cd "$here/../../proto" && pwd)"
out_root="${1:-$here/src}"
py="${PYTHON:-python3}"

# protoc-gen-mypy lives next to the interpreter's scripts (a venv's bin/).
scripts_dir="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$scripts_dir:$PATH"
command -v protoc-gen-mypy >/dev/null || { echo "gen_protos: protoc-gen-mypy not found (pip install mypy-protobuf)" >&2; exit 1; }
"$py" -c 'import grpc_tools' 2>/dev/null || { echo "gen_protos: grpcio-tools is not installed for $py" >&2; exit 1; }

out="$out_root/corral/v1"
mkdir -p "$out"
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py "$out"/*_pb2_grpc.pyi

cd "$proto_root"
"$py" -m grpc_tools.protoc \
  -I . \
  --python_out="$out_root" \
  --grpc_python_out="$out_root" \
  --mypy_out="$out_root" \
  --mypy_grpc_out="$out_root" \
  corral/v1/*.proto

cat > "$out/__init__.py" <<'PY'
"""Generated protobuf and gRPC modules for the `corral.v1` API (see scripts/gen_protos.sh)."""
PY
echo "gen_protos: wrote $(ls "$out" | wc -l) files to $out"
