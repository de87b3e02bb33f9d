#!/usr/bin/env bash
# Smoke-test a built QuorumKV image with plain Docker (no Kubernetes):
#   - both entrypoints start with a read-only root file system, as a non-root numeric user;
#   - three replicas on a user-defined Docker network (peers by container name, read-only
#     root, data in a volume) form a cluster: a PUT through one replica is read back through
#     the others, from the host with curl and from inside a container by name;
#   - a replica stops promptly on SIGTERM (docker stop) and, restarted on its volume, still
#     serves the value.
# Usage: smoke.sh [IMAGE]   (default quorumkv:dev). Cleans up its containers and network.
set -euo pipefail
# shellcheck source=e2e/tools/common.sh
source "$(dirname "$0")/../tools/common.sh"

image="${1:-quorumkv:dev}"
net="qkv-smoke-$$"
names=(qkv-smoke-0-$$ qkv-smoke-1-$$ qkv-smoke-2-$$)
ro=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)

cleanup() {
    docker rm -f -v "${names[@]}" >/dev/null 2>&1 || true
    docker network rm "$net" >/dev/null 2>&1 || true
}
trap cleanup EXIT

docker image inspect "$image" >/dev/null 2>&1 || die "no image $image (build it: e2e/image/build.sh)"
log "image $image: $(( $(docker image inspect -f '{{.Size}}' "$image") / 1000000 )) MB, user $(docker image inspect -f '{{.Config.User}}' "$image")"

uid="$(docker run --rm "${ro[@]}" "$image" id -u)"
[ "$uid" != 0 ] || die "image runs as root"
log "runs as uid $uid"
docker run --rm "${ro[@]}" "$image" python -c \
    'import quorumkv, quorumkv_operator, aiohttp, kopf, uvloop, orjson, prometheus_client, kubernetes' \
    || die "imports fail in the image"
docker run --rm "${ro[@]}" "$image" quorumkv --help >/dev/null || die "quorumkv --help fails"
docker run --rm "${ro[@]}" "$image" quorumkv-operator --help >/dev/null \
    || die "quorumkv-operator --help fails"
log "quorumkv --help and quorumkv-operator --help work with a read-only root"

docker network create "$net" >/dev/null
peers=""
for i in 0 1 2; do peers="${peers:+$peers,}$i=http://${names[$i]}:8080"; done
for i in 0 1 2; do
    docker run -d --name "${names[$i]}" --network "$net" "${ro[@]}" \
        -e QUORUMKV_NODE_ID="$i" -e QUORUMKV_PEERS="$peers" "$image" >/dev/null
done
ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$1"; }
log "3 replicas started on network $net; waiting for /readyz"
for name in "${names[@]}"; do
    addr="$(ip "$name")"
    for _ in $(seq 1 60); do
        curl -fs -o /dev/null "http://$addr:8080/readyz" && break
        sleep 0.5
    done
    curl -fsS -o /dev/null "http://$addr:8080/readyz" \
        || { docker logs --tail 30 "$name" >&2; die "$name not ready"; }
done
log "all ready; PUT via ${names[0]}"
code="$(curl -sS -o /dev/null -w '%{http_code}' -X PUT --data-binary 'hello from the smoke test' \
    "http://$(ip "${names[0]}"):8080/v1/kv/smoke")"
[[ "$code" == 20[01] ]] || die "PUT returned $code"
got="$(curl -fsS "http://$(ip "${names[2]}"):8080/v1/kv/smoke")"
[ "$got" = "hello from the smoke test" ] || die "GET via ${names[2]} returned '$got'"
log "GET via ${names[2]} (from the host) returns the value"
got="$(docker exec "${names[1]}" python -c \
    "import urllib.request; print(urllib.request.urlopen('http://${names[2]}:8080/v1/kv/smoke').read().decode())")"
[ "$got" = "hello from the smoke test" ] || die "GET from inside ${names[1]} returned '$got'"
log "GET from inside ${names[1]} through ${names[2]} by container name returns the value"
curl -fsS "http://$(ip "${names[0]}"):8080/v1/cluster" >&2; echo >&2

t0=$(date +%s%N)
docker stop -t 10 "${names[2]}" >/dev/null
ms=$((($(date +%s%N) - t0) / 1000000))
log "docker stop ${names[2]} took $ms ms (10 s would mean SIGTERM was ignored)"
[ "$ms" -lt 9000 ] || die "the replica ignores SIGTERM"
docker start "${names[2]}" >/dev/null
for _ in $(seq 1 60); do
    curl -fs -o /dev/null "http://$(ip "${names[2]}"):8080/readyz" && break
    sleep 0.5
done
got="$(curl -fsS "http://$(ip "${names[2]}"):8080/v1/kv/smoke")"
[ "$got" = "hello from the smoke test" ] || die "GET after restart returned '$got'"
log "restarted ${names[2]} serves the value again"
log "smoke test passed"
