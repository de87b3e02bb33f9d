# Shared settings for the e2e and build scripts. Source it; it defines no side effects.
# QUORUMKV_CACHE holds heavy builds (Kubernetes binaries, base images, Go tools) outside the
# checkout, so a warm rerun does not rebuild them.
QUORUMKV_CACHE="${QUORUMKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quorumkv}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
KIND_VERSION="${KIND_VERSION:-v0.30.0}"
GOBIN_DIR="$QUORUMKV_CACHE/bin"
export PATH="$GOBIN_DIR:/usr/local/go/bin:$PATH"
mkdir -p "$QUORUMKV_CACHE" "$GOBIN_DIR"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
