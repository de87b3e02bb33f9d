"""The QuorumKV operator: reconciles `KVCluster` resources (quorumkv.dev/v1alpha1) with kopf.

Layers, from the edge inwards: `cli` → `handlers` → {`apply`, `probe`} → {`builders`,
`status`, `scaling`} → `model`/`settings`. The inner modules are pure (no I/O, no kopf) so
that the unit tests cover every decision; the replicas are reached only through
`quorumkv.client`.
"""
