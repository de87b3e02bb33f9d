# shellcheck shell=bash
# Shared settings for the local cluster scripts. Source it (it sources e2e/tools/common.sh).
# Defines variables and helpers only; no side effects beyond creating the cache directory.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../tools/common.sh"

set -a   # the settings below are exported: render() substitutes them into config templates
LC_DIR="$REPO_ROOT/e2e/localcluster"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"        # must match gomod/kubernetes/go.mod
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"      # must match gomod/etcd/go.mod
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.1}"
PAUSE_IMAGE="${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}"
K8S_BIN="$QUORUMKV_CACHE/k8s/$K8S_VERSION/bin"

# Runtime layout.
STATE_DIR="${LOCALCLUSTER_STATE:-/var/lib/quorumkv-localcluster}"
LOG_DIR="$STATE_DIR/logs"
RUN_DIR="$STATE_DIR/run"          # pid files
PKI_DIR="$STATE_DIR/pki"
KUBECONFIG_PATH="$STATE_DIR/admin.kubeconfig"
CONTAINERD_ROOT="$STATE_DIR/containerd"
CONTAINERD_STATE="/run/quorumkv-containerd"
CONTAINERD_SOCK="/run/quorumkv-containerd/containerd.sock"   # not dockerd's, not the distro default
KUBELET_ROOT="$STATE_DIR/kubelet"
CNI_CONF_DIR="$STATE_DIR/cni/net.d"
CNI_BIN_DIR="/usr/lib/cni"
HOSTPATH_PV_DIR="/tmp/hostpath_pv"   # fixed in Kubernetes: where kube-controller-manager's hostpath provisioner creates volumes

# Network.
NODE_NAME="${NODE_NAME:-quorumkv-node}"
DUMMY_IF="qkv0"
NODE_IP="10.87.0.1"
POD_CIDR="10.88.0.0/16"
SERVICE_CIDR="10.96.0.0/16"
API_SERVICE_IP="10.96.0.1"
DNS_IP="10.87.0.1"
CLUSTER_DOMAIN="cluster.local"
API_PORT=6443
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
COREDNS_READY_PORT=18181
set +a

export PATH="$K8S_BIN:$PATH"
export GOTOOLCHAIN=local

# ---------------------------------------------------------------------------------------
# Helpers

# Substitute ${VAR} (exported settings above) in a template; fail on unknown names.
render() {
    perl -pe 's/\$\{(\w+)\}/exists $ENV{$1} ? $ENV{$1} : die "render: \${$1} is not set in lib.sh\n"/ge' "$1"
}

# pid of a component we started, if it is still running (checks the command name too).
daemon_pid() {
    local f="$RUN_DIR/$1.pid" pid
    [[ -s $f ]] || return 1
    pid="$(cat "$f")"
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(basename "$(cat "$RUN_DIR/$1.cmd" 2>/dev/null || echo "$1")")" || return 1
    echo "$pid"
}

# start_daemon NAME CMD ARGS...: start CMD in its own session (it outlives this script),
# stdin/stdout/stderr detached, output appended to $LOG_DIR/NAME.log. No-op if running.
start_daemon() {
    local name="$1"; shift
    if daemon_pid "$name" >/dev/null; then log "$name already running (pid $(daemon_pid "$name"))"; return 0; fi
    echo "$1" >"$RUN_DIR/$name.cmd"
    printf '\n===== %s starting: %s\n' "$(date -Is)" "$*" >>"$LOG_DIR/$name.log"
    setsid "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &   # 9 = our lock fd
    echo $! >"$RUN_DIR/$name.pid"
    log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

# wait_for WHAT TIMEOUT CMD...: retry CMD every second until it succeeds; progress every 10 s.
wait_for() {
    local what="$1" timeout="$2"; shift 2
    local t0=$SECONDS
    log "waiting for $what (up to ${timeout}s)"
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - t0 >= timeout)); then
            die "timed out after ${timeout}s waiting for $what; logs in $LOG_DIR"
        fi
        if (((SECONDS - t0) % 10 == 9)); then log "... still waiting for $what ($((SECONDS - t0))s)"; fi
        sleep 1
    done
    log "$what: ok ($((SECONDS - t0))s)"
}

ALL_DAEMONS=(etcd kube-apiserver kube-controller-manager pv-perms kube-scheduler containerd kubelet kube-proxy coredns)

cluster_healthy() {
    local d
    for d in "${ALL_DAEMONS[@]}"; do daemon_pid "$d" >/dev/null || return 1; done
    [[ -s $KUBECONFIG_PATH ]] || return 1
    kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout 5s get --raw /readyz >/dev/null 2>&1 || return 1
    [[ "$(kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout 5s get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# sign NAME CN O [SAN]: key + certificate signed by our CA (or by $PKI_DIR/$SIGN_CA.crt),
# into $PKI_DIR/NAME.{key,crt}.
sign() {
    local name="$1" cn="$2" o="$3" san="${4:-}" subj ext ca="${SIGN_CA:-ca}"
    [[ -s $PKI_DIR/$name.crt ]] && return 0
    subj="/CN=$cn"; [[ -n $o ]] && subj="/O=$o$subj"
    ext="$PKI_DIR/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n $san ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
        else echo "extendedKeyUsage=clientAuth"; fi
    } >"$ext"
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/$name.key" 2>/dev/null
    openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" -out "$PKI_DIR/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/$ca.crt" -CAkey "$PKI_DIR/$ca.key" \
        -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
    rm -f "$PKI_DIR/$name.csr" "$ext"
}

make_pki() {
    umask 077
    local ca
    for ca in ca front-proxy-ca; do   # cluster CA; CA of the aggregation layer's request headers
        [[ -s $PKI_DIR/$ca.crt ]] && continue
        log "creating $ca and certificates in $PKI_DIR"
        openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/$ca.key" 2>/dev/null
        openssl req -x509 -new -key "$PKI_DIR/$ca.key" -subj "/CN=quorumkv-localcluster-$ca" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
            -out "$PKI_DIR/$ca.crt" 2>/dev/null
    done
    SIGN_CA=front-proxy-ca sign front-proxy-client front-proxy-client ""
    sign apiserver kube-apiserver "" \
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1"
    sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    sign admin quorumkv-admin system:masters
    sign controller-manager system:kube-controller-manager ""
    sign scheduler system:kube-scheduler ""
    sign kubelet "system:node:$NODE_NAME" system:nodes
    sign kube-proxy system:kube-proxy ""
    sign coredns system:coredns ""
    if [[ ! -s $PKI_DIR/sa.key ]]; then
        openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
        openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
    fi
    umask 022
}

# make_kubeconfig CERTNAME USER GROUP PATH: kubeconfig with embedded credentials.
make_kubeconfig() {
    local cert="$1" path="$4"
    [[ -s $path ]] && return 0
    cat >"$path" <<KC
apiVersion: v1
kind: Config
clusters:
- name: quorumkv-local
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$cert.key")
contexts:
- name: quorumkv-local
  context: {cluster: quorumkv-local, user: "$2"}
current-context: quorumkv-local
KC
    chmod 600 "$path"
}

# make_pause_archive OUT: a docker-archive (the `docker save` format) holding one layer with
# our static pause binary, tagged $PAUSE_IMAGE; `ctr images import` reads it. No Docker needed.
make_pause_archive() {
    local out="$1" d layer_sum cfg cfg_sum
    d="$(mktemp -d)"
    mkdir -p "$d/rootfs" "$d/img"
    install -m 0755 "$K8S_BIN/pause" "$d/rootfs/pause"
    tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$d/rootfs" -cf "$d/layer.tar" pause
    layer_sum="$(sha256sum "$d/layer.tar" | cut -d' ' -f1)"
    mkdir -p "$d/img/$layer_sum"
    mv "$d/layer.tar" "$d/img/$layer_sum/layer.tar"
    cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",\"config\":{\"Entrypoint\":[\"/pause\"],\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$layer_sum\"]},\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"quorumkv localcluster pause\"}]}"
    cfg_sum="$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)"
    printf '%s' "$cfg" >"$d/img/$cfg_sum.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg_sum" "$PAUSE_IMAGE" "$layer_sum" >"$d/img/manifest.json"
    tar -C "$d/img" -cf "$out" .
    rm -rf "$d"
}
