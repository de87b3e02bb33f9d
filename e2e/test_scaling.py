"""Scaling under load on a real cluster: `kubectl scale kvc` 3 → 5 → 3 while clients read,
write, compare-and-set, create and delete through the client Service; the operator pod is
killed in the middle of each scale. Afterwards every acknowledged write is readable and the
whole history is linearizable (the project's Jepsen-style checker).

Timings are printed (run with -s). The clients talk to the client Service's ClusterIP when
this machine routes to it (the local cluster does), else through `kubectl port-forward`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from jepsen.checker import check
from jepsen.history import Outcome
from jepsen.workload import Client, KeyGroup, Mix, Recorder, final_reads, new_session
from kube import Kubectl, condition, summary, wait_for

NAME = "scale"
PRELOAD = int(os.environ.get("QUORUMKV_E2E_SCALE_KEYS", "2000"))
CLIENTS = 6
SCALE_BUDGET = float(os.environ.get("QUORUMKV_E2E_SCALE_BUDGET", "180"))
MANIFEST = f"""
apiVersion: quorumkv.dev/v1alpha1
kind: KVCluster
metadata: {{name: {NAME}}}
spec:
  replicas: 3
  storage: {{size: 64Mi, reclaimPolicy: Delete}}
  resources: {{requests: {{cpu: 50m, memory: 64Mi}}, limits: {{memory: 256Mi}}}}
"""


def kvc(k: Kubectl) -> dict[str, Any] | None:
    return k.get("kvc", NAME)


def at_rest(k: Kubectl, members: int) -> bool:
    obj = kvc(k)
    st = (obj or {}).get("status") or {}
    return (st.get("replicas") == members and st.get("readyReplicas") == members
            and (st.get("scaling") or {}).get("phase") == "Idle"
            and st.get("phase") == "Running"
            and condition(obj, "Available").get("status") == "True")


def scaling_line(k: Kubectl) -> str:
    obj = kvc(k)
    sc = ((obj or {}).get("status") or {}).get("scaling") or {}
    return (f"{summary(obj)} scaling={sc.get('phase')} {sc.get('from')}→{sc.get('to')} "
            f"epoch={sc.get('epoch')} {sc.get('rescanned')}/{sc.get('total')} "
            f"{sc.get('message')!r}")


def reasons(k: Kubectl) -> list[str]:
    items = k.json("get", "events", "--field-selector",
                   f"involvedObject.kind=KVCluster,involvedObject.name={NAME}")["items"]
    return [e["reason"] for e in items]


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def client_endpoint(k: Kubectl) -> Iterator[str]:
    svc = k.get("service", NAME)
    assert svc is not None
    ip = svc["spec"]["clusterIP"]
    if tcp_open(ip, 8080):
        yield f"http://{ip}:8080"
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert k.namespace
    proc = subprocess.Popen([k.binary, "-n", k.namespace, "port-forward", f"svc/{NAME}",
                             f"{port}:8080"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: tcp_open("127.0.0.1", port), timeout=30, what="port-forward")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Load:
    """Jepsen-style clients in a thread of their own (the test thread runs kubectl)."""

    def __init__(self, url: str) -> None:
        self.urls = {"svc": url}
        self.recorder = Recorder()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.error: BaseException | None = None

    async def _client(self, cid: int, group: KeyGroup) -> None:
        client = Client(cid, self.urls, group, self.recorder, random.Random(cid), 5.0, Mix())
        async with new_session() as session:
            client.session = session
            while not self.stop.is_set():
                await client.one()

    async def _run(self) -> None:
        try:
            groups = [KeyGroup(f"g{g}", ops_per_key=60) for g in range(CLIENTS // 3)]
            await asyncio.gather(*(self._client(c, groups[c % len(groups)])
                                   for c in range(CLIENTS)))
        except BaseException as e:  # reported by the test
            self.error = e

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


async def preload(url: str, n: int) -> dict[str, str]:
    values = {f"pre/{i}": f"v{i}" for i in range(n)}
    gate = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:
        async def put(key: str, value: str) -> None:
            async with gate:
                for _ in range(20):
                    async with session.put(f"{url}/v1/kv/{key.replace('/', '%2F')}",
                                           data=value.encode()) as resp:
                        if resp.status in (200, 201):
                            return
                    await asyncio.sleep(0.5)
                raise AssertionError(f"preload of {key} failed")
        await asyncio.gather(*(put(k, v) for k, v in values.items()))
    return values


async def read_all(url: str, keys: list[str]) -> dict[str, str | None]:
    gate = asyncio.Semaphore(32)
    out: dict[str, str | None] = {}
    async with aiohttp.ClientSession() as session:
        async def get(key: str) -> None:
            async with gate:
                for _ in range(20):
                    async with session.get(f"{url}/v1/kv/{key.replace('/', '%2F')}") as resp:
                        if resp.status in (200, 404):
                            out[key] = (await resp.read()).decode() if resp.status == 200 \
                                else None
                            return
                    await asyncio.sleep(0.5)
                raise AssertionError(f"read of {key} failed")
        await asyncio.gather(*(get(k) for k in keys))
    return out


def kill_operator_when(k: Kubectl, phases: tuple[str, ...], what: str) -> str:
    """Wait for the scale to reach one of `phases`, then delete the operator pod."""
    seen = wait_for(lambda: (((kvc(k) or {}).get("status") or {}).get("scaling") or {})
                    .get("phase") in phases and scaling_line(k),
                    timeout=60, interval=0.2, what=what, seen=lambda: scaling_line(k))
    k("delete", "pod", "-l", "app.kubernetes.io/name=quorumkv-operator", "--wait=false")
    return str(seen)


def scale(k: Kubectl, members: int, kill_in: tuple[str, ...]) -> tuple[float, str]:
    t0 = time.monotonic()
    k("scale", "kvc", NAME, f"--replicas={members}")
    killed_at = kill_operator_when(k, kill_in, f"scaling to {members} to reach {kill_in}")
    wait_for(lambda: at_rest(k, members), timeout=SCALE_BUDGET, interval=0.5,
             what=f"{NAME} at rest with {members} members", seen=lambda: scaling_line(k))
    return time.monotonic() - t0, killed_at


@pytest.fixture(scope="module")
def cluster(k: Kubectl, operator_ready: None) -> Iterator[Kubectl]:
    k.apply(MANIFEST)
    wait_for(lambda: at_rest(k, 3), timeout=150, what=f"{NAME} Available with 3 members",
             seen=lambda: scaling_line(k))
    try:
        yield k
    finally:
        k("delete", "kvc", NAME, "--wait=true", "--timeout=90s", check=False, timeout=120)


def test_scale_3_to_5_to_3_under_load_with_operator_restarts(cluster: Kubectl) -> None:
    k = cluster
    with client_endpoint(k) as url:
        t0 = time.monotonic()
        preloaded = asyncio.run(preload(url, PRELOAD))
        print(f"\n[e2e] preloaded {PRELOAD} keys in {time.monotonic() - t0:.1f}s")
        with Load(url) as load:
            time.sleep(2)
            up, killed_up = scale(k, 5, ("AddingReplicas", "ChangingMembership"))
            sts = k.get("statefulset", NAME)
            assert sts is not None and sts["spec"]["replicas"] == 5
            obj = kvc(k)
            assert obj is not None and obj["status"]["scaling"]["members"] == [
                "0", "1", "2", "3", "4"]
            assert obj["status"]["scaling"]["last"]["to"] == ["0", "1", "2", "3", "4"]
            assert k.get("pdb", NAME)["spec"]["maxUnavailable"] == 2  # type: ignore[index]
            down, killed_down = scale(k, 3, ("ChangingMembership", "RemovingReplicas"))
            time.sleep(1)
        assert load.error is None, repr(load.error)
        print(f"[e2e] scale 3→5 with {PRELOAD}+ keys under load: {up:.1f}s "
              f"(operator killed at: {killed_up})")
        print(f"[e2e] scale 5→3: {down:.1f}s (operator killed at: {killed_down})")

        sts = k.get("statefulset", NAME)
        assert sts is not None and sts["spec"]["replicas"] == 3
        peers = next(e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
                     if e["name"] == "QUORUMKV_PEERS")
        assert peers.count("=http://") == 3, "the bootstrap peer list never changes"
        assert k.get("pdb", NAME)["spec"]["maxUnavailable"] == 1  # type: ignore[index]
        wait_for(lambda: k.get("pvc", f"data-{NAME}-3") is None
                 and k.get("pvc", f"data-{NAME}-4") is None, timeout=60,
                 what="the removed replicas' PVCs deleted (reclaimPolicy Delete)")
        obj = kvc(k)
        assert obj is not None
        members = obj["status"]["members"]
        assert [m["name"] for m in members] == [f"{NAME}-{i}" for i in range(3)]
        assert all(m["epoch"] >= 5 for m in members), members  # 1 + two changes of 2 epochs

        ops = load.recorder.ops
        keys = sorted({op.key for op in ops})
        asyncio.run(final_reads(load.urls, keys, load.recorder, timeout=5.0))
        result = check(load.recorder.ops)
        ok = sum(op.outcome is Outcome.OK for op in ops)
        info = sum(op.outcome is Outcome.INFO for op in ops)
        print(f"[e2e] history: {len(ops)} ops ({ok} ok, {info} indeterminate) on "
              f"{len(keys)} keys; linearizable={result.valid} in {result.elapsed_s:.1f}s")
        assert len(result.keys) == len(keys)
        assert result.valid is True, [
            (f.key, [op.describe() for op in f.window]) for f in result.failures][:3]
        assert ok > 100, "the clients did work during the scale"
        got = asyncio.run(read_all(url, list(preloaded)))
        lost = [key for key, v in preloaded.items() if got.get(key) != v]
        assert not lost, f"{len(lost)} preloaded keys lost, e.g. {lost[:5]}"

    log = k("logs", "deploy/quorumkv-operator", "--tail=5000").stdout
    errors = [line for line in log.splitlines()
              if '"severity": "error"' in line or "Traceback" in line]
    assert not errors, "\n".join(errors[:5])
    seen = reasons(k)
    for reason in ("ScalingUp", "AddingReplicas", "MembershipChangeStarted",
                   "MembershipChanged", "ScalingDone", "ScalingDown", "RemovingReplicas",
                   "VolumesReleased"):
        assert reason in seen, f"no {reason} event in {sorted(set(seen))}"
