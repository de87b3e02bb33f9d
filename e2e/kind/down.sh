#!/usr/bin/env bash
# Delete the kind cluster made by e2e/kind/up.sh (and its kubeconfig file). Idempotent.
# Env: KIND_CLUSTER_NAME (quorumkv)
set -euo pipefail
# shellcheck source=e2e/tools/common.sh
source "$(dirname "$0")/../tools/common.sh"

cluster="${KIND_CLUSTER_NAME:-quorumkv}"
kubeconfig="$QUORUMKV_CACHE/kind/$cluster.kubeconfig"
if ! command -v kind >/dev/null 2>&1; then
    command -v go >/dev/null 2>&1 || die "kind not found (and no Go toolchain to install it)"
    bash "$REPO_ROOT/e2e/tools/ensure-go-tools.sh" kind
fi
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" --kubeconfig "$kubeconfig" >&2
else
    log "no kind cluster $cluster"
fi
rm -f "$kubeconfig"
