"""API coordinates of the custom resource and the operator's identity on the API server."""

GROUP = "quorumkv.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "KVCluster"
PLURAL = "kvclusters"
MANAGER = "quorumkv-operator"
"""Field manager for server-side apply and the `app.kubernetes.io/managed-by` label."""
