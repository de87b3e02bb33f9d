# shellcheck shell=bash
# Source me:  source e2e/localcluster/env.sh
# Exports KUBECONFIG for the local cluster and puts the built kubectl (and the other cluster
# binaries) first on PATH. Does not start anything: run up.sh first.
_lc_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export QUORUMKV_CACHE="${QUORUMKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quorumkv}"
export KUBECONFIG="${LOCALCLUSTER_STATE:-/var/lib/quorumkv-localcluster}/admin.kubeconfig"
export PATH="$QUORUMKV_CACHE/k8s/$(sed -n 's/^K8S_VERSION="\${K8S_VERSION:-\(v[^}]*\)}".*/\1/p' "$_lc_dir/lib.sh")/bin:$PATH"
# containerd of the local cluster (for ctr/load-image.sh): not the default socket.
export LOCALCLUSTER_CONTAINERD_ADDRESS=/run/quorumkv-containerd/containerd.sock
unset _lc_dir
