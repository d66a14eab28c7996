#!/usr/bin/env bash
# Builds Corral's sandbox images into the local Docker engine without any registry:
# a Debian root filesystem made with debootstrap is fed to `docker import`, then `docker build`
# adds the image metadata (user, workdir, labels) on top.
#
#   deploy/images/build.sh            # build the images that are missing
#   deploy/images/build.sh --force    # rebuild all
#
# Images: corral/base   Debian bookworm minbase: shell, coreutils, procps; user `sandbox` (uid 1000)
#         corral/python corral/base's contents plus python3 and pip
set -euo pipefail
cd "$(dirname "$0")"

force=0
[[ "${1:-}" == "--force" ]] && force=1
mirror="${CORRAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${CORRAL_DEBIAN_SUITE:-bookworm}"
work="$(mktemp -d "${TMPDIR:-/tmp}/corral-images.XXXXXX")"
trap 'rm -rf "$work"' EXIT

command -v docker >/dev/null || { echo "docker is required to build images" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable (docker info failed)" >&2; exit 1; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  echo "installing debootstrap"
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq debootstrap >/dev/null
}

# build NAME "extra,packages"
build() {
  local name="$1" include="$2" rootfs="$work/$1"
  if [[ $force -eq 0 ]] && have "corral/$name:latest"; then
    echo "corral/$name: present"
    return
  fi
  ensure_debootstrap
  echo "corral/$name: debootstrap $suite (+ $include) ..."
  debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" >"$work/$name.log" 2>&1 \
    || { tail -20 "$work/$name.log" >&2; exit 1; }
  chroot "$rootfs" /usr/sbin/groupadd -g 1000 sandbox
  chroot "$rootfs" /usr/sbin/useradd -u 1000 -g 1000 -d /workspace -M -s /bin/sh sandbox
  install -d -o 1000 -g 1000 -m 0755 "$rootfs/workspace"
  chmod 1777 "$rootfs/tmp"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . | docker import - "corral/$name-rootfs:$suite" >/dev/null
  docker build -q -t "corral/$name:latest" --build-arg ROOTFS="corral/$name-rootfs:$suite" \
    --label "org.corral.image=$name" -f Dockerfile . >/dev/null
  echo "corral/$name: built ($(docker image inspect -f '{{.Size}}' "corral/$name:latest" | awk '{printf "%.0f MB", $1/1e6}'))"
}

build base "procps,ca-certificates"
build python "procps,ca-certificates,python3,python3-pip"
