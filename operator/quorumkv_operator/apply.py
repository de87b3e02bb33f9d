"""Kubernetes I/O: idempotent server-side apply of the built manifests, and the reads the
status needs. Synchronous (the official client is); handlers call it via `asyncio.to_thread`.

Server-side apply with one field manager means a re-run sends the same intent and changes
nothing, fields we stop sending are removed, and fields others own (e.g. an HPA's) are kept.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quorumkv_operator.builders import Manifest
from quorumkv_operator.names import GROUP, MANAGER, PLURAL, VERSION

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class NotOwned(Exception):
    """An object by the name a KVCluster needs exists and is not that KVCluster's: it is
    never taken over (a server-side apply would rewrite it, and deleting the KVCluster
    would then delete it)."""


class Kube:
    """The handful of API calls the operator makes, each one line of intent."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def close(self) -> None:
        """Release the connection pool (an operator stopping inside a longer process)."""
        self.api.close()  # type: ignore[no-untyped-call]

    def _calls(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        return {
            "StatefulSet": (self.apps.read_namespaced_stateful_set,
                            self.apps.patch_namespaced_stateful_set),
            "Service": (self.core.read_namespaced_service, self.core.patch_namespaced_service),
            "PodDisruptionBudget": (self.policy.read_namespaced_pod_disruption_budget,
                                    self.policy.patch_namespaced_pod_disruption_budget),
        }[kind]

    def apply(self, manifest: Manifest) -> bool:
        """Server-side apply; True when the object was created or changed. Raises
        `NotOwned` for an object of that name that another owner (or nobody) has."""
        meta = manifest["metadata"]
        read, patch = self._calls(manifest["kind"])
        existing = self._read(read, meta["name"], meta["namespace"])
        if existing is not None:
            owners = {ref.uid for ref in existing.metadata.owner_references or ()}
            if not owners & {ref["uid"] for ref in meta["ownerReferences"]}:
                raise NotOwned(f"{manifest['kind']}/{meta['name']} exists and does not belong "
                               "to this KVCluster")
        before = None if existing is None else existing.metadata.resource_version
        after = patch(meta["name"], meta["namespace"], manifest, field_manager=MANAGER,
                      force=True, _content_type=APPLY)
        return bool(before != after.metadata.resource_version)

    @staticmethod
    def _read(read: Callable[..., Any], name: str, namespace: str) -> Any:
        try:
            return read(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def ensure_secret(self, manifest: Manifest) -> bool:
        """Create the Secret if absent; never overwrite it. True when created."""
        meta = manifest["metadata"]
        try:
            self.core.read_namespaced_secret(meta["name"], meta["namespace"])
            return False
        except ApiException as e:
            if e.status != 404:
                raise
        try:
            self.core.create_namespaced_secret(meta["namespace"], manifest,  # type: ignore[arg-type]
                                               field_manager=MANAGER)
            return True
        except ApiException as e:
            if e.status == 409:  # another reconcile won the race; its token stands
                return False
            raise

    def secret_value(self, name: str, namespace: str, key: str) -> str | None:
        """One key of a Secret, decoded (None if the Secret or key is absent)."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        raw = (secret.data or {}).get(key)
        return base64.b64decode(raw).decode() if raw else None

    def claims(self, namespace: str, prefix: str) -> list[str]:
        """Names of the PVCs in `namespace` that start with `prefix` (`data-<cluster>-`)."""
        items = self.core.list_namespaced_persistent_volume_claim(namespace).items
        return [p.metadata.name for p in items
                if p.metadata and p.metadata.name and p.metadata.name.startswith(prefix)]

    def delete_claim(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    def statefulset(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            obj = self.apps.read_namespaced_stateful_set(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._plain(obj)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self._plain(p) for p in items]

    def _plain(self, obj: object) -> dict[str, Any]:
        """A typed client object as the plain dict the pure code works on."""
        return cast(dict[str, Any], self.api.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def kvcluster(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return cast(dict[str, Any], obj)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, name: str, namespace: str, status: dict[str, Any],
                     resource_version: str | None = None) -> bool:
        """Merge-patch the status subresource (lists such as conditions are replaced whole,
        which is what we want: `status.compute` always returns the full list). With
        `resource_version`, only if the object did not change since it was read (False
        on conflict: the caller re-reads), so a slow refresh never overwrites newer status."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            if e.status != 404:  # deleted meanwhile: nothing to report on
                raise
            return True

    def expand_claims(self, namespace: str, claim_names: list[str], size: str) -> list[str]:
        """Ask each existing PVC for at least `size` (volume expansion); the API server
        refuses when the StorageClass does not allow it. Returns error messages."""
        errors = []
        for claim in claim_names:
            try:
                pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            res = pvc.spec.resources if pvc.spec else None
            current = ((res.requests if res else None) or {}).get("storage")
            if current == size:
                continue
            try:
                self.core.patch_namespaced_persistent_volume_claim(
                    claim, namespace,
                    {"spec": {"resources": {"requests": {"storage": size}}}},
                    _content_type=MERGE)
            except ApiException as e:  # the server's message says why (e.g. no expansion)
                errors.append(f"{claim}: {e.status} {e.reason}: {_message(e)}")
        return errors


def _message(e: ApiException) -> str:
    """The API server's explanation in an error (its Status `message`), else its body."""
    try:
        return str(json.loads(e.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(e.body or "")[:300]
