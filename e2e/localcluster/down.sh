#!/usr/bin/env bash
# Tear down the local cluster started by up.sh: kill every pod container and every process
# up.sh started, unmount everything they mounted, remove the iptables rules/chains, the CNI
# leftovers and the dummy interface, and delete the cluster state (etcd data, certificates,
# host-path volumes under /tmp/hostpath_pv). Keeps the binary cache and $STATE_DIR/logs.
# Idempotent: safe to run when nothing (or only part) is up.
# No `set -e`: teardown is best effort and must go on past a step that fails.
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $EUID -eq 0 ]] || die "down.sh must run as root"
t0=$SECONDS
mkdir -p "$STATE_DIR"
if [[ -z ${LOCALCLUSTER_LOCK_HELD:-} ]]; then   # set when up.sh (holding the lock) calls us
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "another up.sh/down.sh holds $STATE_DIR/.lock"
fi
log "tearing down the local cluster (state: $STATE_DIR)"

# stop_daemon NAME [SECONDS]: SIGTERM, then SIGKILL after the grace period.
stop_daemon() {
    local name="$1" grace="${2:-10}" pid i
    pid="$(daemon_pid "$name")" || { rm -f "$RUN_DIR/$name.pid"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < grace * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop; killing it"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
    rm -f "$RUN_DIR/$name.pid"
}

# stop_daemons NAME...: the same for several components at once.
stop_daemons() {
    local n pids=() names=() i
    for n in "$@"; do
        if p=$(daemon_pid "$n"); then pids+=("$p"); names+=("$n"); kill -TERM "$p" 2>/dev/null; fi
        rm -f "$RUN_DIR/$n.pid"
    done
    ((${#pids[@]})) || return 0
    log "stopping ${names[*]}"
    for ((i = 0; i < 50; i++)); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# 1. Stop the node agents first, so nothing restarts pods while we kill them.
stop_daemons kubelet kube-proxy coredns

# 2. Kill all containers: first through containerd (so it cleans up its shims), then any
#    process still in the pods' cgroups, and the shims that served our containerd.
if daemon_pid containerd >/dev/null && [[ -S $CONTAINERD_SOCK ]]; then
    for ns in $(ctr --address "$CONTAINERD_SOCK" namespaces ls -q 2>/dev/null); do
        tasks=$(ctr --address "$CONTAINERD_SOCK" -n "$ns" tasks ls -q 2>/dev/null)
        if [[ -n $tasks ]]; then log "killing $(wc -w <<<"$tasks") containers (containerd namespace $ns)"; fi
        for t in $tasks; do ctr --address "$CONTAINERD_SOCK" -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
        sleep 0.5
        for t in $tasks; do ctr --address "$CONTAINERD_SOCK" -n "$ns" tasks delete -f "$t" >/dev/null 2>&1; done
        for c in $(ctr --address "$CONTAINERD_SOCK" -n "$ns" containers ls -q 2>/dev/null); do
            ctr --address "$CONTAINERD_SOCK" -n "$ns" containers delete "$c" >/dev/null 2>&1
        done
    done
fi
# Anything left in the kubepods cgroups (cgroupfs driver) is ours: kill it, then remove the cgroups.
for pass in 1 2 3; do
    leftover=$(cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
        /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -u)
    [[ -z $leftover ]] && break
    log "killing $(wc -w <<<"$leftover") leftover pod processes (pass $pass)"
    kill -KILL $leftover 2>/dev/null
    sleep 1
done
stop_daemon containerd 10
# Shims of our containerd (they outlive it by design) carry our socket in their command line.
for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    if [[ $cmd == containerd-shim* || $cmd == */containerd-shim* ]] && [[ $cmd == *"$CONTAINERD_SOCK"* ]]; then
        log "killing leftover shim ${p#/proc/}"; kill -KILL "${p#/proc/}" 2>/dev/null
    fi
done

# 3. Control plane.
stop_daemons kube-scheduler kube-controller-manager pv-perms kube-apiserver etcd

# 4. Unmount everything under our directories (deepest first), and the pod network namespaces
#    that containerd's CRI created (/run/netns/cni-*).
unmount_under() {
    local prefix="$1" m
    for _ in 1 2 3; do
        mapfile -t mounts < <(awk -v p="$prefix" 'index($2, p) == 1 {print $2}' /proc/self/mounts | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
        ((${#mounts[@]})) || return 0
        for m in "${mounts[@]}"; do
            m=$(printf '%b' "$m")   # /proc/mounts escapes spaces as \040
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done
    done
}
unmount_under "$STATE_DIR/"
unmount_under "$CONTAINERD_STATE"
for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null
    rm -f "$ns"
done
# Empty kubepods cgroups.
for h in /sys/fs/cgroup/*/kubepods; do
    [[ -d $h ]] || continue
    find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
done

# 5. Network: kube-proxy's rules, ours, the pod routes and the dummy interface.
if [[ -x $K8S_BIN/kube-proxy ]]; then
    "$K8S_BIN/kube-proxy" --cleanup >>"$LOG_DIR/kube-proxy.log" 2>&1 || log "kube-proxy --cleanup reported errors (see $LOG_DIR/kube-proxy.log)"
fi
# What kube-proxy --cleanup leaves: the kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
# KUBE-IPTABLES-HINT, ...). Every KUBE-* chain on this host is ours: no other Kubernetes runs here.
for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for table in filter nat mangle raw; do
        $ipt -t $table -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE-|QKV-)' | grep -vE '^-A (KUBE-|QKV-)' | while read -r _ rule; do
            eval "$ipt -t $table -D $rule" 2>/dev/null
        done
        for chain in $($ipt -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|QKV-)/ {print $2}'); do
            $ipt -t $table -F "$chain" 2>/dev/null
        done
        for chain in $($ipt -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|QKV-)/ {print $2}'); do
            $ipt -t $table -X "$chain" 2>/dev/null
        done
    done
done
while read -r dst _; do ip route del "$dst" 2>/dev/null; done < <(ip -4 route show | awk '$1 ~ /^10\.88\./ {print}')
if ip link show "$DUMMY_IF" >/dev/null 2>&1; then log "removing interface $DUMMY_IF"; ip link del "$DUMMY_IF"; fi

# 6. State (everything but the logs) and the host-path volumes.
if [[ -d $STATE_DIR ]]; then
    find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name logs ! -name .lock -exec rm -rf {} + 2>/dev/null \
        || log "warning: could not remove everything in $STATE_DIR (still mounted?)"
fi
rm -rf "$CONTAINERD_STATE" "$HOSTPATH_PV_DIR" "$(dirname "$CONTAINERD_SOCK")"
# Paths the kubelet and containerd's CNI code use whatever the configuration says.
find /var/log/containers -maxdepth 1 -type l -lname "$STATE_DIR/*" -delete 2>/dev/null
rm -rf /var/lib/kubelet/device-plugins /var/lib/kubelet/pki
rm -f /var/lib/cni/results/quorumkv-local-* /var/lib/cni/results/cni-loopback-*
rmdir /var/log/containers /var/lib/kubelet /var/lib/cni/results /var/lib/cni 2>/dev/null

# 7. Check.
left=""
for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case "$cmd" in "$K8S_BIN"/*|*"$CONTAINERD_SOCK"*|*"$STATE_DIR/containerd.toml"*) left+=" ${p#/proc/}";; esac
done
[[ -z $left ]] || log "warning: processes still running:$left"
if grep -qE "$STATE_DIR|$CONTAINERD_STATE" /proc/self/mounts; then log "warning: mounts remain under $STATE_DIR or $CONTAINERD_STATE"; fi
log "local cluster down in $((SECONDS - t0)) s (logs kept in $LOG_DIR)"
