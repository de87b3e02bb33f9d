#!/usr/bin/env bash
# Build (or reuse from the cache) the binaries of the local cluster:
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl  (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3), coredns, pause
# into $QUORUMKV_CACHE/k8s/<k8s version>/bin. Each binary has a stamp file with the version it
# was built from; a binary whose stamp matches is not rebuilt. A cold build takes 20-40 min
# on 2 cores; a warm run takes a second. Progress goes to stderr.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" GOTOOLCHAIN=local
mkdir -p "$K8S_BIN"

stamp_ok() { [[ -x "$K8S_BIN/$1" && "$(cat "$K8S_BIN/.stamp-$1" 2>/dev/null)" == "$2" ]]; }
stamp() { echo "$2" >"$K8S_BIN/.stamp-$1"; }

# --- Kubernetes -------------------------------------------------------------------------
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
todo=()
for c in "${k8s_cmds[@]}"; do stamp_ok "$c" "$K8S_VERSION" || todo+=("$c"); done
if ((${#todo[@]})); then
    mod="$LC_DIR/gomod/kubernetes"
    grep -q "k8s.io/kubernetes $K8S_VERSION" "$mod/go.mod" || die "$mod/go.mod does not require k8s.io/kubernetes $K8S_VERSION"
    v="${K8S_VERSION#v}"; major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
    # The module zip carries no git metadata: commit is unknown, build date is the tag's date.
    build_date="$(curl -fsS "$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/$K8S_VERSION.info" 2>/dev/null \
        | sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p')"
    build_date="${build_date:-1970-01-01T00:00:00Z}"
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ld+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done
    pkgs=(); for c in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    log "building Kubernetes $K8S_VERSION: ${todo[*]} (cold: 20-40 min on 2 cores) -> $K8S_BIN"
    t0=$SECONDS
    ( cd "$mod"
      [[ -s go.sum ]] || { log "resolving modules (go mod tidy)"; go mod tidy; }
      log "downloading modules"; go mod download
      log "compiling (go build -v lists packages as they finish)"
      go build -v -ldflags "$ld" -o "$K8S_BIN/" "${pkgs[@]}" 2>&1 \
        | awk -v n=0 '{n++; if (n % 200 == 0) printf "[%s] ... %d packages compiled (%s)\n", strftime("%H:%M:%S"), n, $0 > "/dev/stderr"; fflush()}'
      exit "${PIPESTATUS[0]}" )
    for c in "${todo[@]}"; do [[ -x "$K8S_BIN/$c" ]] || die "build did not produce $c"; stamp "$c" "$K8S_VERSION"; done
    log "Kubernetes built in $((SECONDS - t0)) s"
fi

# --- etcd -------------------------------------------------------------------------------
if ! stamp_ok etcd "$ETCD_VERSION"; then
    mod="$LC_DIR/gomod/etcd"
    grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$mod/go.mod" || die "$mod/go.mod does not require etcd $ETCD_VERSION"
    log "building etcd $ETCD_VERSION (a few minutes cold)"
    t0=$SECONDS
    ( cd "$mod"
      [[ -s go.sum ]] || { log "resolving etcd modules (go mod tidy)"; go mod tidy; }
      go build -ldflags "-s -w" -o "$K8S_BIN/etcd" go.etcd.io/etcd/server/v3 )
    stamp etcd "$ETCD_VERSION"
    log "etcd built in $((SECONDS - t0)) s"
fi

# --- CoreDNS (plain go install works: no replace directives) -----------------------------
if ! stamp_ok coredns "$COREDNS_VERSION"; then
    log "building CoreDNS $COREDNS_VERSION with go install (a few minutes cold)"
    t0=$SECONDS
    GOBIN="$K8S_BIN" go install -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
    stamp coredns "$COREDNS_VERSION"
    log "CoreDNS built in $((SECONDS - t0)) s"
fi

# --- pause (our own sandbox program) -------------------------------------------------------
pause_src_sum="$(cat "$LC_DIR/gomod/pause/"*.go "$LC_DIR/gomod/pause/go.mod" | sha256sum | cut -c1-16)"
if ! stamp_ok pause "$pause_src_sum"; then
    log "building pause"
    ( cd "$LC_DIR/gomod/pause" && go build -ldflags "-s -w" -o "$K8S_BIN/pause" . )
    stamp pause "$pause_src_sum"
fi
log "binaries ready in $K8S_BIN"
