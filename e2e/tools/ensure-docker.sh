#!/usr/bin/env bash
# Make sure a Docker engine answers: install docker.io from Debian if needed and start dockerd
# in the background (no systemd on these machines). Idempotent.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
fi
log "starting dockerd (log: /var/log/quorumkv-dockerd.log)"
nohup dockerd >/var/log/quorumkv-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd is up"; exit 0; }
    sleep 1
done
die "dockerd did not come up; see /var/log/quorumkv-dockerd.log"
