#!/usr/bin/env bash
# Build the QuorumKV image on a machine without a container registry:
#   1. a Docker engine (e2e/tools/ensure-docker.sh),
#   2. the local base image quorumkv-base:bookworm (e2e/image/build-base.sh),
#   3. a wheelhouse for the base image's Python in e2e/image/wheels/ (downloaded on the host,
#      where PyPI is reachable, cached in $QUORUMKV_CACHE/wheels/),
#   4. `docker build` of the repository's Dockerfile against both, with pip offline.
# Prints the image tag on stdout at the end; progress goes to stderr.
#
# Usage: build.sh [TAG]                 (default quorumkv:dev)
# Env:   QUORUMKV_BASE_IMAGE            base image (default quorumkv-base:bookworm)
#        QUORUMKV_REFRESH_WHEELS=1      re-download the wheelhouse (new dependency releases)
#        PYTHON                         host Python whose pip downloads the wheels
set -euo pipefail
# shellcheck source=e2e/tools/common.sh
source "$(dirname "$0")/../tools/common.sh"

tag="${1:-quorumkv:dev}"
start=$SECONDS
wheel_dir="$REPO_ROOT/e2e/image/wheels"

bash "$REPO_ROOT/e2e/tools/ensure-docker.sh"
base="$(bash "$REPO_ROOT/e2e/image/build-base.sh")"

# --- what the wheels must fit: the base image's Python, libc and machine, and our requirements
info="$(docker run --rm -i "$base" python3 -c '
import platform, sys, tomllib
d = tomllib.load(sys.stdin.buffer)
print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1], platform.machine())
for r in d["build-system"]["requires"] + d["project"]["dependencies"]:
    print(r)
' <"$REPO_ROOT/pyproject.toml")" || die "could not inspect $base / pyproject.toml"
read -r pyver glibc machine <<<"$(head -n1 <<<"$info")"
requirements="$(tail -n +2 <<<"$info")"
glibc_minor="${glibc#2.}"
[[ "$pyver" =~ ^3\.[0-9]+$ && "$glibc_minor" =~ ^[0-9]+$ ]] \
    || die "unexpected base image info: $pyver $glibc $machine"

key="$(printf '%s\n' "v1" "$pyver" "$glibc" "$machine" "$requirements" | sha256sum | cut -c1-12)"
cache="$QUORUMKV_CACHE/wheels/cp${pyver/./}-$machine-$key"

if [ -f "$cache/.complete" ] && [ "${QUORUMKV_REFRESH_WHEELS:-0}" != 1 ]; then
    log "wheelhouse: cached $cache ($(find "$cache" -name '*.whl' | wc -l) wheels)"
else
    if [ -z "${PYTHON:-}" ]; then
        if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON="$REPO_ROOT/.venv/bin/python"
        else PYTHON=python3; fi
    fi
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip; set PYTHON=..."
    # pip only widens manylinux2014/2010 itself, so list every manylinux_2_N the libc allows.
    platforms=(--platform "manylinux2014_$machine")
    for ((m = 17; m <= glibc_minor; m++)); do
        platforms+=(--platform "manylinux_2_${m}_$machine")
    done
    log "wheelhouse: downloading wheels for CPython $pyver, glibc $glibc, $machine"
    tmp="$(mktemp -d "$QUORUMKV_CACHE/wheels.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    mapfile -t reqs <<<"$requirements"
    "$PYTHON" -m pip download --disable-pip-version-check --quiet --dest "$tmp" \
        --only-binary=:all: --implementation cp --python-version "$pyver" \
        --abi "cp${pyver/./}" "${platforms[@]}" "${reqs[@]}" >&2 \
        || die "pip download failed (is PyPI reachable from the host?)"
    touch "$tmp/.complete"
    rm -rf "$cache"
    mkdir -p "$(dirname "$cache")"
    mv "$tmp" "$cache"
    trap - EXIT
    log "wheelhouse: $(find "$cache" -name '*.whl' | wc -l) wheels cached in $cache"
fi

# Put the wheelhouse into the build context only when it differs (keeps Docker's cache warm).
if ! diff -q <(cd "$cache" && ls -- *.whl) <(cd "$wheel_dir" && ls -- *.whl 2>/dev/null) \
        >/dev/null 2>&1; then
    log "wheelhouse: syncing into $wheel_dir"
    find "$wheel_dir" -maxdepth 1 -name '*.whl' -delete
    cp -l "$cache"/*.whl "$wheel_dir"/ 2>/dev/null || cp "$cache"/*.whl "$wheel_dir"/
fi

log "docker build -t $tag (base $base, pip offline)"
build_start=$SECONDS
vcs_ref="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$REPO_ROOT" status --porcelain -- service operator pyproject.toml 2>/dev/null)" ]; then
    vcs_ref="$vcs_ref-dirty"
fi
old_id="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
# The legacy builder works with every engine and needs no buildx plugin (absent here).
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build \
    --build-arg BASE_IMAGE="$base" \
    --build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheels" \
    --build-arg VCS_REF="$vcs_ref" \
    -t "$tag" "$REPO_ROOT" >&2 \
    || die "docker build failed"
new_id="$(docker image inspect -f '{{.Id}}' "$tag")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # The previous build of this tag is now untagged; drop it unless something still uses it.
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi
size="$(docker image inspect -f '{{.Size}}' "$tag")"
log "built $tag ($((size / 1000000)) MB) in $((SECONDS - start)) s (docker build $((SECONDS - build_start)) s)"
echo "$tag"
