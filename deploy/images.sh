#!/usr/bin/env bash
# Base images made on this machine from Debian's packages, without any registry.
#
#   deploy/images.sh busybox   busybox:latest from busybox-static (the test and demo image)
#   deploy/images.sh python    podium/python:3: debootstrap --variant=minbase bookworm with
#                              python3 and python3-tornado (the Tornado example's base)
#
# Idempotent: an image already in the store is left as it is (FORCE=1 imports it
# again), and the Debian root filesystem is built once and kept as a tarball in
# $PODIUM_CACHE (default /var/cache/podium). Run as root (`sudo make busybox-image`).
#
# Environment: PODIUM_IMAGE_STORE (the store; default /var/lib/podium/images),
# PODIUM_CACHE, DEBIAN_MIRROR (default: debootstrap's own), FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=".venv/bin/python"
PODIUM=".venv/bin/podium"
CACHE="${PODIUM_CACHE:-/var/cache/podium}"
MIRROR="${DEBIAN_MIRROR:-}"  # empty: debootstrap's default mirror
SUITE="bookworm"

present() {
    if [ "${FORCE:-0}" != 1 ] && "$PODIUM" image inspect "$1" >/dev/null 2>&1; then
        echo "$1 is already in the image store (FORCE=1 to import it again)"
        return 0
    fi
    return 1
}

busybox_image() {
    present busybox:latest && return 0
    local work
    work=$(mktemp -d /tmp/podium-busybox-XXXXXX)
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "rm -rf '$work'" RETURN
    "$PY" -m runtime.images.bases "$work/rootfs" >/dev/null
    tar --sort=name --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/busybox.tar" .
    "$PODIUM" image import -c 'CMD ["sh"]' "$work/busybox.tar" busybox:latest
}

python_image() {
    present podium/python:3 && return 0
    local tarball="$CACHE/python3-$SUITE.tar.gz"
    mkdir -p "$CACHE"
    # One debootstrap at a time (a test run and `make python-image` may overlap): a
    # second caller waits here, then finds the tarball made.
    exec 9>"$CACHE/.python3-$SUITE.lock"
    flock 9
    if [ ! -f "$tarball" ]; then
        command -v debootstrap >/dev/null || {
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        local rootfs="$CACHE/python3-$SUITE.rootfs"
        rm -rf "$rootfs"  # what an interrupted run left
        echo "debootstrap $SUITE (minbase, python3, python3-tornado) into $rootfs"
        debootstrap --variant=minbase --include=python3,python3-tornado \
            "$SUITE" "$rootfs" ${MIRROR:+"$MIRROR"} >"$CACHE/debootstrap.log" 2>&1 || {
            tail -n 20 "$CACHE/debootstrap.log" >&2
            echo "debootstrap failed: see $CACHE/debootstrap.log" >&2
            exit 1
        }
        # What a container does not need: downloaded packages, package lists, the
        # device nodes debootstrap made (a container gets its own /dev).
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/dev/* "$rootfs"/var/log/*.log
        # Written to a temporary name and renamed, so the cache never holds half a tarball.
        tar --sort=name --numeric-owner --xattrs -C "$rootfs" -czf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    "$PODIUM" image import -c 'CMD ["python3"]' -c 'ENV LANG=C.UTF-8' \
        "$tarball" podium/python:3
}

case "${1:-}" in
    busybox) busybox_image ;;
    python) python_image ;;
    *) echo "usage: $0 busybox|python" >&2; exit 2 ;;
esac
