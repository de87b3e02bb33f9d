#!/usr/bin/env bash
# QuorumKV on kind, for machines with Docker and registry access (kind pulls its node image).
# Idempotent: creates the kind cluster `quorumkv` if it is missing, builds the image with a
# plain `docker build`, loads it into the nodes, installs the Helm chart, applies the sample
# KVCluster, waits until it is Available and writes/reads a key through its client Service.
# Prints the kubeconfig path on stdout at the end (progress goes to stderr):
#
#   export KUBECONFIG="$(e2e/kind/up.sh)"
#
# Usage: up.sh [--cluster-only]   --cluster-only: cluster + image, no chart and no sample
#                                 (what the e2e suite wants: it installs the chart itself)
# Env:   KIND_CLUSTER_NAME (quorumkv), KIND_NODE_IMAGE (kind's default),
#        QUORUMKV_IMAGE (quorumkv:dev), QUORUMKV_NAMESPACE (quorumkv)
set -euo pipefail
# shellcheck source=e2e/tools/common.sh
source "$(dirname "$0")/../tools/common.sh"

cluster_only=0
case "${1:-}" in
    --cluster-only) cluster_only=1 ;;
    "") ;;
    *) die "usage: $0 [--cluster-only]" ;;
esac

cluster="${KIND_CLUSTER_NAME:-quorumkv}"
image="${QUORUMKV_IMAGE:-quorumkv:dev}"
namespace="${QUORUMKV_NAMESPACE:-quorumkv}"
kubeconfig="$QUORUMKV_CACHE/kind/$cluster.kubeconfig"
sample="$REPO_ROOT/e2e/manifests/demo.yaml"
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

if [ "$cluster_only" = 1 ]; then
    log "cluster ready in $((SECONDS - start)) s; image $image loaded (chart not installed)"
    echo "$kubeconfig"
    exit 0
fi

# --- operator (chart) and the sample KVCluster
repo="${image%:*}"; tag="${image##*:}"
if [ "$repo" = "$image" ] || [[ "$tag" == */* ]]; then repo="$image"; tag=latest; fi
log "helm upgrade --install quorumkv (namespace $namespace, image $repo:$tag)"
helm upgrade --install quorumkv "$REPO_ROOT/charts/quorumkv" \
    --namespace "$namespace" --create-namespace \
    --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=IfNotPresent \
    --wait --timeout 5m >&2
log "applying $sample; waiting for Available"
"$kubectl" -n "$namespace" apply -f "$sample" >&2
"$kubectl" -n "$namespace" wait kvc/demo --for=condition=Available --timeout=5m >&2 \
    || { "$kubectl" -n "$namespace" get kvc,pods >&2; die "KVCluster demo did not become Available"; }
"$kubectl" -n "$namespace" get kvc demo >&2

# --- a write and a read through the client Service, with the CLI inside the image
"$kubectl" -n "$namespace" exec demo-0 -- quorumkv put hello-from-kind "it works" \
    --endpoint http://demo:8080 >&2
value="$("$kubectl" -n "$namespace" exec demo-1 -- quorumkv get hello-from-kind \
    --endpoint http://demo:8080)"
[ "$value" = "it works" ] || die "read back '$value' instead of 'it works'"
log "put/get through Service demo works; up in $((SECONDS - start)) s"
cat >&2 <<MSG

QuorumKV is running on kind cluster '$cluster' (namespace $namespace).
  export KUBECONFIG=$kubeconfig
  kubectl -n $namespace get kvc
  kubectl -n $namespace port-forward svc/demo 8080:8080 &
  curl -X PUT --data-binary world http://127.0.0.1:8080/v1/kv/hello
  curl http://127.0.0.1:8080/v1/kv/hello
Tear down: e2e/kind/down.sh
MSG
echo "$kubeconfig"
