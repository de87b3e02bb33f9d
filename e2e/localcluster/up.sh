#!/usr/bin/env bash
# Bring up (idempotently) a real single-node Kubernetes cluster on this host and print the
# path of its admin kubeconfig on stdout. Everything else (progress) goes to stderr.
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
#   CoreDNS: host processes built from Go modules (build.sh, cached in $QUORUMKV_CACHE);
#   containerd + runc + CNI ptp/host-local from Debian; our own pause image.
#
# State, certificates and logs live in $STATE_DIR (/var/lib/quorumkv-localcluster); logs in
# $STATE_DIR/logs/<component>.log. Run as root. Tear down with down.sh.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $EUID -eq 0 ]] || die "up.sh must run as root"
trap 'log "error: up.sh failed at line $LINENO (component logs: $LOG_DIR)"' ERR
mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$PKI_DIR"
chmod 700 "$STATE_DIR"
exec 9>"$STATE_DIR/.lock"
flock -w 600 9 || die "another up.sh/down.sh holds $STATE_DIR/.lock"

# Fast path: everything already running and healthy.
if cluster_healthy; then
    log "local cluster already up (logs: $LOG_DIR)"
    echo "$KUBECONFIG_PATH"
    exit 0
fi

t_start=$SECONDS
# Leftovers of a cluster whose processes are all gone (killed, machine handed over): clean
# them up completely first, so we start from a known state.
any_running=false
for d in "${ALL_DAEMONS[@]}"; do daemon_pid "$d" >/dev/null && any_running=true; done
if ! $any_running && { [[ -d $STATE_DIR/etcd || -d $CONTAINERD_STATE ]] || ip link show "$DUMMY_IF" >/dev/null 2>&1; }; then
    log "found state of a cluster that is no longer running: cleaning it up first (down.sh)"
    LOCALCLUSTER_LOCK_HELD=1 "$LC_DIR/down.sh" >&2
fi
mkdir -p "$LOG_DIR" "$RUN_DIR" "$PKI_DIR"
log "bringing up the local cluster (state: $STATE_DIR, logs: $LOG_DIR)"

# --- 1. binaries --------------------------------------------------------------------------
"$LC_DIR/build.sh" >&2

# --- 2. runtime packages from Debian ----------------------------------------------------
need_pkgs=()
command -v containerd >/dev/null || need_pkgs+=(containerd)
command -v runc >/dev/null || need_pkgs+=(runc)
[[ -x $CNI_BIN_DIR/ptp && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/loopback ]] || need_pkgs+=(containernetworking-plugins)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v conntrack >/dev/null || need_pkgs+=(conntrack)
command -v openssl >/dev/null || need_pkgs+=(openssl)
if ((${#need_pkgs[@]})); then
    log "installing from Debian: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

# --- 3. host network ---------------------------------------------------------------------
if ! ip link show "$DUMMY_IF" >/dev/null 2>&1; then
    log "adding interface $DUMMY_IF with $NODE_IP (node, API server and DNS address)"
    # A dummy interface where the kernel has the driver; otherwise (as here) an empty bridge,
    # which is built in and just as inert: no ports, only a local address.
    ip link add "$DUMMY_IF" type dummy 2>/dev/null || ip link add "$DUMMY_IF" type bridge
fi
ip addr replace "$NODE_IP/32" dev "$DUMMY_IF"
ip link set "$DUMMY_IF" up
sysctl -qw net.ipv4.ip_forward=1
# Pod-to-pod traffic is routed through the host (ptp). Docker sets FORWARD policy DROP, so
# accept traffic between pods explicitly, and drop anything else from pods that would be
# forwarded off the node (pods must never reach outside this machine).
iptables -N QKV-FORWARD 2>/dev/null || iptables -F QKV-FORWARD
iptables -A QKV-FORWARD -s "$POD_CIDR" -d "$POD_CIDR" -j ACCEPT -m comment --comment "quorumkv localcluster: pod to pod"
iptables -A QKV-FORWARD -s "$POD_CIDR" -j DROP -m comment --comment "quorumkv localcluster: nothing leaves the node"
iptables -C FORWARD -j QKV-FORWARD 2>/dev/null || iptables -I FORWARD 1 -j QKV-FORWARD

# --- 4. certificates and kubeconfigs -----------------------------------------------------
make_pki
make_kubeconfig admin "quorumkv-admin" "system:masters" "$KUBECONFIG_PATH"
make_kubeconfig controller-manager "system:kube-controller-manager" "" "$STATE_DIR/controller-manager.kubeconfig"
make_kubeconfig scheduler "system:kube-scheduler" "" "$STATE_DIR/scheduler.kubeconfig"
make_kubeconfig kubelet "system:node:$NODE_NAME" "system:nodes" "$STATE_DIR/kubelet.kubeconfig"
make_kubeconfig kube-proxy "system:kube-proxy" "" "$STATE_DIR/kube-proxy.kubeconfig"
make_kubeconfig coredns "system:coredns" "" "$STATE_DIR/coredns.kubeconfig"

# --- 5. etcd ---------------------------------------------------------------------------------
start_daemon etcd "$K8S_BIN/etcd" --name qkv --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "qkv=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) --log-level warn
wait_for "etcd" 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# --- 6. kube-apiserver -----------------------------------------------------------------
start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$API_PORT" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --requestheader-client-ca-file "$PKI_DIR/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI_DIR/front-proxy-client.crt" --proxy-client-key-file "$PKI_DIR/front-proxy-client.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --v=1
wait_for "kube-apiserver" 120 kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz

log "applying cluster add-ons (RBAC for CoreDNS, StorageClass 'standard')"
kubectl --kubeconfig "$KUBECONFIG_PATH" apply -f "$LC_DIR/manifests/" >&2

# --- 7. controller-manager and scheduler ----------------------------------------------------
start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --controllers '*' --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false \
    --enable-hostpath-provisioner=true --profiling=false --v=1
start_daemon pv-perms "$LC_DIR/pv-perms.sh" "$HOSTPATH_PV_DIR"
start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1

# --- 8. containerd, CNI, pause image --------------------------------------------------------
mkdir -p "$STATE_DIR/cni/net.d" "$(dirname "$CONTAINERD_SOCK")"
render "$LC_DIR/config/containerd.toml" >"$STATE_DIR/containerd.toml"
render "$LC_DIR/config/10-quorumkv.conflist" >"$STATE_DIR/cni/net.d/10-quorumkv.conflist"
start_daemon containerd containerd --config "$STATE_DIR/containerd.toml"
wait_for "containerd" 60 ctr --address "$CONTAINERD_SOCK" version
if ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qxF "$PAUSE_IMAGE"; then
    log "importing our pause image as $PAUSE_IMAGE"
    make_pause_archive "$STATE_DIR/pause-image.tar"
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$STATE_DIR/pause-image.tar" >&2
fi

# --- 9. kubelet, kube-proxy, CoreDNS --------------------------------------------------------
printf 'nameserver %s\noptions ndots:1\n' "$DNS_IP" >"$STATE_DIR/resolv.conf"
render "$LC_DIR/config/kubelet.yaml" >"$STATE_DIR/kubelet.yaml"
render "$LC_DIR/config/kube-proxy.yaml" >"$STATE_DIR/kube-proxy.yaml"
render "$LC_DIR/config/Corefile" >"$STATE_DIR/Corefile"
mkdir -p "$KUBELET_ROOT" "$STATE_DIR/pod-logs"
start_daemon kubelet "$K8S_BIN/kubelet" \
    --config "$STATE_DIR/kubelet.yaml" --kubeconfig "$STATE_DIR/kubelet.kubeconfig" \
    --root-dir "$KUBELET_ROOT" --cert-dir "$KUBELET_ROOT/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
start_daemon kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE_DIR/kube-proxy.yaml" --v=1
start_daemon coredns "$K8S_BIN/coredns" -conf "$STATE_DIR/Corefile"

# --- 10. wait until usable -------------------------------------------------------------------
k() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
node_ready() { [[ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; }
wait_for "node $NODE_NAME to be Ready" 180 node_ready
wait_for "the default ServiceAccount" 120 k -n default get serviceaccount default
wait_for "CoreDNS to sync with the API server" 60 curl -fsS "http://127.0.0.1:$COREDNS_READY_PORT/ready"
wait_for "kube-proxy" 60 curl -fsS "http://127.0.0.1:10256/healthz"
log "local cluster up in $((SECONDS - t_start)) s; kubeconfig: $KUBECONFIG_PATH (source $LC_DIR/env.sh)"
echo "$KUBECONFIG_PATH"
