#!/usr/bin/env bash
# `make demo`: a cluster (kind if usable, else the local one), the image, the operator through
# the Helm chart, the sample KVCluster `demo`, a write and a read through its client Service,
# and how to use it. Idempotent: run it again and it reuses what is there.
set -euo pipefail
source "$(dirname "$0")/tools/common.sh"

namespace="${QUORUMKV_NAMESPACE:-quorumkv}"
image="${QUORUMKV_IMAGE:-quorumkv:dev}"
sample="$REPO_ROOT/e2e/manifests/demo.yaml"
started=$SECONDS

bash "$REPO_ROOT/e2e/tools/ensure-go-tools.sh" helm
KUBECONFIG="$(bash "$REPO_ROOT/e2e/cluster.sh" up)"
export KUBECONFIG
if [ "$(bash "$REPO_ROOT/e2e/cluster.sh" kind)" = local ]; then
    # shellcheck source=/dev/null
    source "$REPO_ROOT/e2e/localcluster/env.sh"
fi
command -v kubectl >/dev/null || die "kubectl not found"

repo="${image%:*}"; tag="${image##*:}"
log "helm upgrade --install quorumkv (namespace $namespace, image $repo:$tag)"
helm upgrade --install quorumkv "$REPO_ROOT/charts/quorumkv" \
    --namespace "$namespace" --create-namespace \
    --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=IfNotPresent \
    --wait --timeout 5m >&2
log "applying the sample KVCluster ($sample); waiting until it is Available"
kubectl -n "$namespace" apply -f "$sample" >&2
if ! kubectl -n "$namespace" wait kvc/demo --for=condition=Available --timeout=5m >&2; then
    kubectl -n "$namespace" get kvc,pods >&2
    die "KVCluster demo did not become Available; see: kubectl -n $namespace describe kvc demo"
fi
kubectl -n "$namespace" get kvc demo >&2

log "writing and reading a key through Service demo"
# Ready pods are not yet a reachable Service: its endpoints reach the node's proxy rules a
# moment later, and until then connections to it are refused. The write is idempotent.
for attempt in $(seq 30); do
    if kubectl -n "$namespace" exec demo-0 -- quorumkv put hello "it works" \
        --endpoint http://demo:8080 >&2; then
        break
    fi
    [ "$attempt" -lt 30 ] || die "could not write through Service demo for 30 s"
    log "Service demo not reachable yet; retrying in 1 s"
    sleep 1
done
value="$(kubectl -n "$namespace" exec demo-1 -- quorumkv get hello --endpoint http://demo:8080)"
[ "$value" = "it works" ] || die "read back '$value' instead of 'it works'"
log "demo ready in $((SECONDS - started)) s"
cat <<MSG

QuorumKV is running: KVCluster 'demo' in namespace '$namespace'.
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $namespace get kvc                      # replicas, ready, phase, available
  kubectl -n $namespace port-forward svc/demo 8080:8080 &
  curl -X PUT --data-binary world http://127.0.0.1:8080/v1/kv/hello
  curl http://127.0.0.1:8080/v1/kv/hello
  kubectl -n $namespace exec demo-0 -- quorumkv get hello --endpoint http://demo:8080
Tear down: make cluster-down
MSG
