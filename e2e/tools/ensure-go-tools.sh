#!/usr/bin/env bash
# Install pinned Helm and kind with `go install` into $QUORUMKV_CACHE/bin when missing (without
# Go, the ones already on PATH are used).
# Usage: ensure-go-tools.sh [helm] [kind]   (default: both). Prints nothing on a warm cache.
set -euo pipefail
source "$(dirname "$0")/common.sh"

want=("$@"); [ ${#want[@]} -gt 0 ] || want=(helm kind)
for tool in "${want[@]}"; do
    case "$tool" in
        helm) pkg="helm.sh/helm/v3/cmd/helm@$HELM_VERSION"; ver="$HELM_VERSION" ;;
        kind) pkg="sigs.k8s.io/kind@$KIND_VERSION"; ver="$KIND_VERSION" ;;
        *) die "unknown tool: $tool (known: helm kind)" ;;
    esac
    stamp="$GOBIN_DIR/.$tool-$ver"
    [ -x "$GOBIN_DIR/$tool" ] && [ -f "$stamp" ] && continue
    if ! command -v go >/dev/null 2>&1; then
        command -v "$tool" >/dev/null 2>&1 \
            || die "$tool is not installed and there is no Go to build $tool $ver with"
        log "no Go to build $tool $ver: using $(command -v "$tool") ($("$tool" version 2>&1 | head -1))"
        continue
    fi
    log "building $tool $ver with go install (first time only)"
    GOBIN="$GOBIN_DIR" CGO_ENABLED=0 go install "$pkg"
    touch "$stamp"
done
