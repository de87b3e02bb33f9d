#!/usr/bin/env bash
# One front for the two kinds of cluster the e2e suite and the demo run on.
#
#   cluster.sh up     bring the cluster up (idempotent), build and load the image quorumkv:dev,
#                     print the kubeconfig path on stdout
#   cluster.sh down   tear it down
#   cluster.sh kind   print which kind of cluster `up` would use
#
# QUORUMKV_CLUSTER=kind|local|auto (default auto): kind where Docker and kind work and a kind
# node image is present (kind cannot build one offline); otherwise the local cluster built
# from Kubernetes' Go modules (e2e/localcluster, root only).
set -euo pipefail
source "$(dirname "$0")/tools/common.sh"

IMAGE="${QUORUMKV_IMAGE:-quorumkv:dev}"

which_cluster() {
    case "${QUORUMKV_CLUSTER:-auto}" in
        kind|local) echo "$QUORUMKV_CLUSTER"; return ;;
        auto) ;;
        *) die "QUORUMKV_CLUSTER must be kind, local or auto" ;;
    esac
    if command -v kind >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
            && [ -n "$(docker images -q 'kindest/node' 2>/dev/null)" ]; then
        echo kind
    else
        echo local
    fi
}

case "${1:-}" in
    up)
        kind_of="$(which_cluster)"
        log "cluster: $kind_of"
        if [ "$kind_of" = kind ]; then
            exec bash "$REPO_ROOT/e2e/kind/up.sh"
        fi
        kubeconfig="$(bash "$REPO_ROOT/e2e/localcluster/up.sh")"
        bash "$REPO_ROOT/e2e/image/build.sh" "$IMAGE" >/dev/null
        bash "$REPO_ROOT/e2e/localcluster/load-image.sh" "$IMAGE"
        echo "$kubeconfig"
        ;;
    down)
        if [ "$(which_cluster)" = kind ]; then
            exec bash "$REPO_ROOT/e2e/kind/down.sh"
        fi
        exec bash "$REPO_ROOT/e2e/localcluster/down.sh"
        ;;
    kind) which_cluster ;;
    *) die "usage: $0 up|down|kind" ;;
esac
