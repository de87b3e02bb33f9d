#!/usr/bin/env bash
# Run the end-to-end suite: bring the cluster up (if needed) with the image loaded, then
# pytest e2e/ against it. Extra arguments go to pytest (e.g. -k scale).
set -euo pipefail
source "$(dirname "$0")/tools/common.sh"

bash "$REPO_ROOT/e2e/tools/ensure-go-tools.sh" helm
started=$SECONDS
KUBECONFIG="$(bash "$REPO_ROOT/e2e/cluster.sh" up)"
export KUBECONFIG
log "cluster and image ready in $((SECONDS - started)) s; running the e2e suite"
# the local cluster's kubectl (same version as the cluster) goes first on PATH
if [ -f "$REPO_ROOT/e2e/localcluster/env.sh" ] && [ "$(bash "$REPO_ROOT/e2e/cluster.sh" kind)" = local ]; then
    # shellcheck source=/dev/null
    source "$REPO_ROOT/e2e/localcluster/env.sh"
fi
cd "$REPO_ROOT"
# Warnings stay errors, except one we do not own: kopf's in-process runner (the handler
# test) leaves its aiohttp connections to the API server for the garbage collector, which
# pytest reports as "unraisable" at the end of the session, after every test passed.
exec "${VENV:-.venv}/bin/pytest" e2e -p no:cacheprovider \
    -W "ignore::pytest.PytestUnraisableExceptionWarning" "$@"
