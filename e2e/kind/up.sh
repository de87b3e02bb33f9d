#!/usr/bin/env bash
# A kind cluster for QuorumKV, for machines with Docker and registry access (kind pulls its
# node image). Idempotent: creates the kind cluster `quorumkv` if it is missing, builds the
# image with a plain `docker build` and loads it into the nodes. Prints the kubeconfig path on
# stdout (progress goes to stderr). `make demo` / e2e/demo.sh then install the chart and the
# sample; the e2e suite installs the chart itself.
#
#   export KUBECONFIG="$(e2e/kind/up.sh)"
#
# Env:   KIND_CLUSTER_NAME (quorumkv), KIND_NODE_IMAGE (kind's default),
#        QUORUMKV_IMAGE (quorumkv:dev)
set -euo pipefail
# shellcheck source=e2e/tools/common.sh
source "$(dirname "$0")/../tools/common.sh"

[ $# -eq 0 ] || die "usage: $0 (no arguments; see the header)"

cluster="${KIND_CLUSTER_NAME:-quorumkv}"
image="${QUORUMKV_IMAGE:-quorumkv:dev}"
kubeconfig="$QUORUMKV_CACHE/kind/$cluster.kubeconfig"
start=$SECONDS

# --- tools
command -v docker >/dev/null 2>&1 || die "docker is required"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is it running?)"
if command -v go >/dev/null 2>&1; then
    bash "$REPO_ROOT/e2e/tools/ensure-go-tools.sh" kind helm   # pinned versions
else
    for tool in kind helm; do
        command -v "$tool" >/dev/null 2>&1 \
            || die "$tool not found, and no Go toolchain to install the pinned version"
    done
    log "no Go toolchain: using kind and helm from PATH, not the pinned versions"
fi
kubectl="$(command -v kubectl || true)"
if [ -z "$kubectl" ]; then
    for cand in "$QUORUMKV_CACHE/bin/kubectl" "$QUORUMKV_CACHE"/k8s/*/bin/kubectl; do
        [ -x "$cand" ] && kubectl="$cand"
    done
fi
[ -n "$kubectl" ] || die "kubectl not found: install it (https://kubernetes.io/docs/tasks/tools/)"
export KUBECONFIG="$kubeconfig"
mkdir -p "$(dirname "$kubeconfig")"

# --- cluster (kind writes the kubeconfig to our own file, not to ~/.kube/config)
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "kind cluster $cluster exists"
    kind export kubeconfig --name "$cluster" --kubeconfig "$kubeconfig" >/dev/null 2>&1
else
    log "creating kind cluster $cluster (pulls the node image the first time)"
    kind create cluster --name "$cluster" --config "$REPO_ROOT/e2e/kind/kind-config.yaml" \
        --kubeconfig "$kubeconfig" --wait 3m ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} >&2
fi
"$kubectl" get nodes >&2

# --- image: a plain build (needs PyPI and Docker Hub), then into every node
log "docker build -t $image"
docker build -t "$image" "$REPO_ROOT" >&2
log "kind load docker-image $image"
kind load docker-image "$image" --name "$cluster" >&2

log "kind cluster $cluster ready in $((SECONDS - start)) s; image $image loaded"
echo "$kubeconfig"
