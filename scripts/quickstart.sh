#!/usr/bin/env bash
# Quick start: installs what is missing, builds Corral, starts `corral dev` (everything in one
# process, no etcd/NATS/Docker) and runs a short demo against it, then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "== building corral (debug build, a few minutes the first time)"
cargo build --bins -q
bin="${CARGO_TARGET_DIR:-target}/debug/corral"
port="${CORRAL_QUICKSTART_PORT:-50051}"
state="$(mktemp -d)"
# Sandboxes run as an unprivileged host user, which must be able to traverse to their directories.
chmod 0711 "$state"
log="$state/dev.log"

"$bin" dev --listen "127.0.0.1:$port" --state-dir "$state/sandboxes" >"$log" 2>&1 &
dev_pid=$!
trap 'kill $dev_pid 2>/dev/null; wait $dev_pid 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 $dev_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
echo "== corral dev is serving on 127.0.0.1:$port (pid $dev_pid)"
"$bin" --endpoint "http://127.0.0.1:$port" demo --count 4
echo "== one more: corral run -- python3 -c 'print(6*7)'"
"$bin" --endpoint "http://127.0.0.1:$port" run -- python3 -c 'print(6*7)'
