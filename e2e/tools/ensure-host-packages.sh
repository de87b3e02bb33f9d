#!/usr/bin/env bash
# Debian packages the local tests need on the host: iptables (partitions in the
# linearizability test) and python3-venv. Idempotent; installs only what is missing.
set -euo pipefail
source "$(dirname "$0")/common.sh"

missing=()
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    log "missing host packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
    exit 0
fi
log "installing from Debian: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
