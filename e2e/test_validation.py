"""Invalid KVCluster specs are refused by the API server (schema + CEL), with the message a
user needs. Runs in a namespace no operator watches, so only the API server is involved."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kube import CommandError, Kubectl


def manifest(name: str, spec: str) -> str:
    return f"""
apiVersion: quorumkv.dev/v1alpha1
kind: KVCluster
metadata: {{name: {name}}}
spec: {spec}
"""


def refused(k: Kubectl, text: str, *extra: str) -> str:
    with pytest.raises(CommandError) as err:
        k.apply(text, *extra)
    return err.value.stderr


@pytest.fixture(scope="module")
def v(kubectl: Kubectl, unwatched_namespace: str) -> Iterator[Kubectl]:
    k = kubectl.in_namespace(unwatched_namespace)
    k.apply(manifest("existing", "{storage: {size: 2Gi, storageClassName: standard}}"))
    k.apply(manifest("noclass", "{storage: {size: 1Gi}}"))
    yield k
    k("delete", "kvc", "--all", "--wait=false", check=False)


@pytest.mark.parametrize("spec,message", [
    ("{replicas: 0}", "should be greater than or equal to 1"),
    ("{replicas: 10}", "should be less than or equal to 9"),
    ("{replicas: three}", "spec.replicas"),
    ("{storage: {size: lots}}", "must be a positive quantity"),
    ("{storage: {size: '0'}}", "must be a positive quantity"),
    ("{storage: {reclaimPolicy: Sometimes}}", 'supported values: "Retain", "Delete"'),
    # an empty class means "no class": claims that never bind, and immutable at that
    ("{storage: {size: 1Gi, storageClassName: ''}}", "may not be empty"),
    # what the StatefulSet would refuse later, out of the user's sight
    ("{resources: {requests: {memory: 512Mi}, limits: {memory: 256Mi}}}",
     "resources.requests may not exceed resources.limits"),
    ("{resources: {limits: {cpu: abc}}}", "resources.limits must be quantities"),
    ("{resources: {requests: {cpu: '-1'}}}", "resources.requests must be quantities"),
    ("{resources: {limits: {foo: 1}}}", "resources.limits names must be cpu, memory"),
])
def test_invalid_new_specs_are_refused(v: Kubectl, spec: str, message: str) -> None:
    err = refused(v, manifest("bad", spec), "--dry-run=server")
    assert message in err, err


@pytest.mark.parametrize("name", ["has.dot", "7up", "x" * 53, "Upper"])
def test_names_that_cannot_name_a_statefulset_are_refused(v: Kubectl, name: str) -> None:
    err = refused(v, manifest(name, "{}"), "--dry-run=server")
    assert "at most 52 lowercase letters" in err or "RFC 1123" in err, err


def test_sensible_resources_are_accepted(v: Kubectl) -> None:
    v.apply(manifest("sized", "{resources: {requests: {cpu: 100m, memory: 64Mi}, "
                              "limits: {cpu: 2, memory: 256Mi, example.com/device: 1}}}"),
            "--dry-run=server")


def test_defaults_are_applied_by_the_api_server(v: Kubectl) -> None:
    obj = v.get("kvc", "noclass")
    assert obj is not None
    assert obj["spec"]["replicas"] == 3
    assert obj["spec"]["storage"] == {"size": "1Gi", "reclaimPolicy": "Retain"}


def test_storage_may_not_shrink(v: Kubectl) -> None:
    err = refused(v, manifest("existing", "{storage: {size: 1Gi, storageClassName: standard}}"))
    assert "storage.size may not shrink" in err, err
    # growing is allowed (same quantity in another unit too)
    v.apply(manifest("existing", "{storage: {size: 2048Mi, storageClassName: standard}}"),
            "--dry-run=server")
    v.apply(manifest("existing", "{storage: {size: 3Gi, storageClassName: standard}}"),
            "--dry-run=server")


def test_storage_class_is_immutable(v: Kubectl) -> None:
    err = refused(v, manifest("existing", "{storage: {size: 2Gi, storageClassName: fast}}"))
    assert "storage.storageClassName is immutable" in err, err
    err = refused(v, manifest("noclass", "{storage: {size: 1Gi, storageClassName: fast}}"))
    assert "storage.storageClassName is immutable" in err, err
    err = refused(v, manifest("existing", "{storage: {size: 2Gi}}"))
    assert "storage.storageClassName is immutable" in err, err


def test_scale_subresource_is_bounded_too(v: Kubectl) -> None:
    with pytest.raises(CommandError) as err:
        v("scale", "kvc", "noclass", "--replicas=0")
    assert "greater than or equal to 1" in err.value.stderr
