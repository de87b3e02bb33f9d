#!/usr/bin/env bash
# Copy images built with Docker into the local cluster's containerd (namespace k8s.io), where
# the kubelet finds them without pulling. Usage: load-image.sh IMAGE [IMAGE...]
# Pods must not try to pull them: use a tag other than :latest (imagePullPolicy defaults to
# IfNotPresent) or set imagePullPolicy: IfNotPresent / Never.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
(($#)) || die "usage: $0 IMAGE [IMAGE...]"
[[ -S $CONTAINERD_SOCK ]] || die "the local cluster's containerd is not running ($CONTAINERD_SOCK); run up.sh"
"$REPO_ROOT/e2e/tools/ensure-docker.sh"
t0=$SECONDS
log "loading into the local cluster: $*"
docker save "$@" | ctr --address "$CONTAINERD_SOCK" -n k8s.io images import - >&2
log "loaded in $((SECONDS - t0)) s"
