#!/usr/bin/env bash
# Make the local Python base image (default quorumkv-base:bookworm) without any registry:
# debootstrap a minimal Debian root file system with python3 + venv, then `docker import` it.
#
# The rootfs tarball is cached in $QUORUMKV_CACHE/base/, keyed by suite, variant, packages,
# mirror and architecture, so a warm run skips debootstrap. If the image already exists in
# Docker nothing is done at all. Prints the image name on stdout; progress goes to stderr.
#
# Usage: build-base.sh [--force]        (--force: re-import even if the image exists)
# Env:   QUORUMKV_BASE_IMAGE  image name            (default quorumkv-base:bookworm)
#        QUORUMKV_BASE_SUITE  Debian suite          (default bookworm -> CPython 3.11)
#        DEBIAN_MIRROR        archive for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail
# shellcheck source=e2e/tools/common.sh
source "$(dirname "$0")/../tools/common.sh"

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) die "usage: $0 [--force]" ;;
esac

suite="${QUORUMKV_BASE_SUITE:-bookworm}"
image="${QUORUMKV_BASE_IMAGE:-quorumkv-base:$suite}"
variant=minbase
packages=python3,python3-venv,ca-certificates
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"

bash "$REPO_ROOT/e2e/tools/ensure-docker.sh"

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    log "base image $image already exists (use --force to rebuild)"
    echo "$image"
    exit 0
fi

key="$(printf '%s|%s|%s|%s|%s|v1' "$suite" "$variant" "$packages" "$mirror" "$arch" \
    | sha256sum | cut -c1-12)"
cache_dir="$QUORUMKV_CACHE/base"
tarball="$cache_dir/rootfs-$suite-$arch-$key.tar"
mkdir -p "$cache_dir"

rootfs=""
cleanup() {
    [ -n "$rootfs" ] && [ -d "$rootfs" ] || return 0
    # debootstrap mounts proc/sys inside the target; never delete through a mount.
    awk -v d="$rootfs/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

if [ -f "$tarball" ]; then
    log "using cached rootfs $tarball"
else
    command -v debootstrap >/dev/null 2>&1 || {
        log "installing debootstrap from Debian"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
            debootstrap >/dev/null
    }
    rootfs="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
    log "debootstrap $variant $suite (+$packages) into $rootfs (about a minute)"
    start=$SECONDS
    debootstrap --variant="$variant" --arch="$arch" --include="$packages" \
        "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
    rm -f "$rootfs.log"
    log "debootstrap done in $((SECONDS - start)) s; trimming docs, man pages, apt lists"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
    log "writing rootfs tarball $tarball"
    tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
        --exclude='./sys/*' -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi

log "importing $tarball as $image"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$image" >/dev/null
log "base image $image ready ($(docker run --rm "$image" python3 -V 2>&1))"
echo "$image"
