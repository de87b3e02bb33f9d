#!/usr/bin/env bash
# Small daemon started by up.sh: kube-controller-manager's host-path provisioner creates each
# volume directory /tmp/hostpath_pv/<uuid> with mode 0750 owned by root, and fsGroup does not
# apply to host-path volumes, so a non-root container could not write its own PVC. Open every
# new volume directory to 0777 (what kind's local-path provisioner does) within half a second.
set -uo pipefail
dir="${1:?usage: pv-perms.sh DIR}"
while :; do
    if [[ -d $dir ]]; then
        find "$dir" -mindepth 1 -maxdepth 1 -type d ! -perm 0777 -exec chmod 0777 {} + 2>/dev/null
    fi
    sleep 0.5
done
