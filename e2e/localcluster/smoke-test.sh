#!/usr/bin/env bash
# Prove the local cluster works for what the operator needs. Needs up.sh to have run.
#  - an image built here (busybox-static in a scratch rootfs, `docker import`) loaded with load-image.sh
#  - a StatefulSet of 2 (non-root) with volumeClaimTemplates: PVCs Bound on the default
#    StorageClass, writable by the non-root container
#  - from a pod: DNS for <pod>.<headless-svc>.<ns>.svc.cluster.local and kubernetes.default.svc,
#    a ClusterIP Service, the API server at https://kubernetes.default.svc with the pod's token
#  - deleting the PVCs deletes the PVs and their host directories
# Leaves nothing behind (deletes its namespace). Prints PASS/FAIL lines on stderr.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
export KUBECONFIG="$KUBECONFIG_PATH"
NS=qkv-smoke
t0=$SECONDS

"$REPO_ROOT/e2e/tools/ensure-docker.sh"
command -v busybox >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq busybox-static >&2; }
probe_sum="$(cat "$LC_DIR/gomod/probe/"* | sha256sum | cut -c1-12)"
IMG="quorumkv-smoke-busybox:$probe_sum"
if ! docker image inspect "$IMG" >/dev/null 2>&1; then
    log "building $IMG from Debian's busybox-static and our probe program"
    d="$(mktemp -d)"
    mkdir -p "$d/bin" "$d/tmp" "$d/etc" "$d/data"
    cp "$(readlink -f "$(command -v busybox)")" "$d/bin/busybox"
    (cd "$LC_DIR/gomod/probe" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -ldflags "-s -w" -o "$d/bin/probe" .)
    for a in $("$d/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$d/bin/$a"; done
    echo 'root:x:0:0:root:/:/bin/sh' >"$d/etc/passwd"
    tar -C "$d" -c . | docker import -c 'CMD ["/bin/sh"]' - "$IMG" >/dev/null
    rm -rf "$d"
fi
"$LC_DIR/load-image.sh" "$IMG"

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" apply -f - >&2 <<EOF
apiVersion: v1
kind: Service
metadata: {name: peers}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: peers
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsUser: 1000, runAsGroup: 1000}   # non-root must be able to write its PVC
      containers:
      - name: web
        image: $IMG
        command: [sh, -c, 'hostname > /data/index.html && exec httpd -f -p 8080 -h /data']
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: client, image: $IMG, command: [sleep, "3600"]}
EOF
log "waiting for the StatefulSet and the client pod"
kubectl -n "$NS" rollout status statefulset/web --timeout=180s >&2
kubectl -n "$NS" wait pod/client --for=condition=Ready --timeout=120s >&2

fail=0
check() { local what="$1"; shift; if out=$("$@" 2>&1); then log "PASS $what"; else log "FAIL $what: $out"; fail=1; fi; }
x() { kubectl -n "$NS" exec client -- "$@"; }
bound() { [[ "$(kubectl -n "$NS" get pvc -o jsonpath='{range .items[*]}{.status.phase}{" "}{end}')" == "Bound Bound " ]]; }
check "2 PVCs Bound on StorageClass standard" bound
check "DNS web-0.peers.$NS.svc.$CLUSTER_DOMAIN" x probe lookup "web-0.peers.$NS.svc.$CLUSTER_DOMAIN"
check "DNS web-1.peers (search path)" x probe lookup web-1.peers
check "DNS kubernetes.default.svc" x probe lookup kubernetes.default.svc "kubernetes.default.svc.$CLUSTER_DOMAIN"
check "DNS of an outside name is NXDOMAIN, never forwarded" sh -c "! kubectl -n $NS exec client -- probe lookup example.com."
check "ClusterIP Service web" x sh -c 'probe get http://web/ | grep -q "^web-"'
check "pod to pod through the headless name" x sh -c "probe get http://web-1.peers:8080/ | grep -qx web-1"
check "API server at https://kubernetes.default.svc, in-cluster config (token, CA)" x sh -c 'probe api | grep -q gitVersion'
check "data written on the volume by a non-root container" sh -c "kubectl -n $NS exec web-0 -- cat /data/index.html | grep -qx web-0"

pv_dirs=$(kubectl get pv -o jsonpath='{range .items[?(@.spec.claimRef.namespace=="'"$NS"'")]}{.spec.hostPath.path}{" "}{end}')
log "deleting the test namespace (PVs reclaimed: $pv_dirs)"
kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null
pv_gone() { [[ -z "$(kubectl get pv -o jsonpath='{.items[?(@.spec.claimRef.namespace=="'"$NS"'")].metadata.name}')" ]] && for p in $pv_dirs; do [[ ! -e $p ]] || return 1; done; }
wait_for "PVs and their host directories to be deleted" 60 pv_gone
check "PVs deleted with their data" pv_gone
((fail == 0)) || die "smoke test FAILED after $((SECONDS - t0)) s"
log "smoke test passed in $((SECONDS - t0)) s"
