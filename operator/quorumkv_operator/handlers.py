"""kopf wiring: which events run which cycle. No decisions live here (see `reconcile`).

- create / update / resume of a KVCluster → full reconcile, status through `patch.status`;
- a timer per KVCluster → the same reconcile, to undo drift and to refresh status (its
  status write is also the heartbeat the watch-freshness probe listens for);
- a fast timer (`Settings.drive_interval`, 2 s) → the same reconcile, only while a scale is in
  progress or waiting: each cycle is one step of the membership change;
- events of the cluster's pods and StatefulSet → a coalesced status refresh within a
  second, so conditions follow a pod dying or coming back.
Handlers never return values: kopf would store them under `status.<handler>`, which the
structural schema prunes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from quorumkv_operator import reconcile, scaling
from quorumkv_operator.apply import Kube
from quorumkv_operator.names import GROUP, MANAGER, PLURAL, VERSION
from quorumkv_operator.settings import Settings

POD_LABELS = {"app.kubernetes.io/name": "quorumkv", "app.kubernetes.io/managed-by": MANAGER}
COALESCE_SECONDS = 0.3
POST_RECONCILE_REFRESH_SECONDS = 2.0
Logger = logging.Logger | logging.LoggerAdapter[Any]


class Runtime:
    """State shared by the handlers of one operator process (created at startup)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kube: Kube | None = None
        self.pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.clusters: set[tuple[str, str]] = set()
        self.last_event = time.monotonic()
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One cycle at a time per cluster: kopf runs timers concurrently with the event
        handlers, and two cycles deciding from different observations would flap."""
        return self.locks.setdefault((namespace, name), asyncio.Lock())

    def api(self) -> Kube:
        if self.kube is None:
            self.kube = Kube()
        return self.kube

    def schedule_refresh(self, namespace: str, name: str, logger: Logger,
                         delay: float = COALESCE_SECONDS) -> None:
        """Coalesce bursts of pod events into one refresh per cluster."""
        key = (namespace, name)
        self.dirty.add(key)
        if key not in self.pending or self.pending[key].done():
            self.pending[key] = asyncio.create_task(self._refresh_loop(key, logger, delay))

    async def _refresh_loop(self, key: tuple[str, str], logger: Logger, delay: float) -> None:
        while key in self.dirty:
            self.dirty.discard(key)
            await asyncio.sleep(delay)
            delay = COALESCE_SECONDS
            try:
                async with self.lock(*key):
                    result = await reconcile.refresh(self.api(), self.settings, *key)
            except Exception as e:  # next event or the timer retries; never kill the loop
                logger.warning(f"status refresh of {key[0]}/{key[1]} failed: {e}")
                continue
            if result is not None:
                post(result[0], result[1])

    async def stop(self) -> None:
        for task in self.pending.values():
            task.cancel()
        await asyncio.gather(*self.pending.values(), return_exceptions=True)
        if self.kube is not None:
            self.kube.close()
            self.kube = None


def post(body: Any, events: list[reconcile.Event]) -> None:
    for etype, reason, message in events:
        kopf.event(body, type=etype, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> Runtime:
    """Register every handler into `registry`; return the runtime they share."""
    rt = Runtime(settings)

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """kopf's own API access: the same kubeconfig / in-cluster credentials as ours
        (a custom registry does not get kopf's default login handlers)."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="client_config")
    async def load_client_config(**_: Any) -> None:
        from kubernetes import config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        rt.api()

    @kopf.on.cleanup(registry=registry, id="cleanup")
    async def cleanup(**_: Any) -> None:
        await rt.stop()

    async def run(body: kopf.Body, patch: kopf.Patch, logger: Logger) -> None:
        async with rt.lock(body.metadata.namespace or "", body.metadata.name or ""):
            new_status, events = await reconcile.reconcile(rt.api(), settings, body, logger)
        patch.status.update(new_status)
        post(body, events)
        # kopf applies `patch` unconditionally after we return, possibly over a fresher
        # status a pod event wrote meanwhile; a conditional refresh shortly after repairs it.
        rt.schedule_refresh(body.metadata.namespace or "", body.metadata.name or "", logger,
                            delay=POST_RECONCILE_REFRESH_SECONDS)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    async def reconcile_kvcluster(body: kopf.Body, patch: kopf.Patch,
                                  logger: Logger, **_: Any) -> None:
        await run(body, patch, logger)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="resync",
                interval=settings.resync_interval, initial_delay=settings.resync_interval)
    async def resync_kvcluster(body: kopf.Body, patch: kopf.Patch,
                               logger: Logger, **_: Any) -> None:
        await run(body, patch, logger)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="drive",
                interval=settings.drive_interval, initial_delay=settings.drive_interval)
    async def drive_kvcluster(body: kopf.Body, patch: kopf.Patch,
                              logger: Logger, **_: Any) -> None:
        """Scaling moves one step per cycle; idle clusters cost nothing here."""
        if scaling.wants_cycles(body):
            await run(body, patch, logger)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="seen")
    async def seen_kvcluster(event: kopf.RawEvent, name: str, namespace: str | None,
                             **_: Any) -> None:
        rt.last_event = time.monotonic()
        if event.get("type") == "DELETED":
            rt.clusters.discard((namespace or "", name))
        else:
            rt.clusters.add((namespace or "", name))

    @kopf.on.event("", "v1", "pods", registry=registry, labels=POD_LABELS, id="member_changed")
    @kopf.on.event("apps", "v1", "statefulsets", registry=registry, labels=POD_LABELS,
                   id="member_changed")
    async def member_changed(labels: kopf.Labels, namespace: str | None, logger: Logger,
                             **_: Any) -> None:
        cluster = labels.get("app.kubernetes.io/instance")
        if cluster and namespace:
            rt.schedule_refresh(namespace, cluster, logger)

    @kopf.on.probe(registry=registry, id="watch_freshness")
    async def watch_freshness(**_: Any) -> float:
        """Fails liveness when clusters exist but their watch went quiet for too long
        (`--liveness` alone does not notice a dead watch stream)."""
        age = time.monotonic() - rt.last_event
        if rt.clusters and age > settings.stale_watch_after:
            raise kopf.PermanentError(f"no KVCluster watch event for {age:.0f}s")
        return round(age, 1)

    return rt
