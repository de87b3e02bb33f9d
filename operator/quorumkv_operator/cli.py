"""`quorumkv-operator`: a thin wrapper over `kopf run` with this operator's defaults.

Defaults differ from kopf's where kopf's would surprise in production: liveness endpoint on,
JSON logs, standalone unless `--peering` is given (kopf would otherwise silently fall back
to standalone when the peering object is missing; here a missing object is an error),
a peering priority derived from the pod name, and kopf's bookkeeping kept in annotations
under `quorumkv.dev/` instead of `status.kopf` (which the structural schema would prune).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

import kopf

from quorumkv_operator.handlers import register
from quorumkv_operator.settings import Settings, default_priority, env_settings


def parse_args(argv: Sequence[str] | None = None,
               env: dict[str, str] | None = None) -> tuple[Settings, bool]:
    env = dict(os.environ) if env is None else env
    p = argparse.ArgumentParser(prog="quorumkv-operator", description=__doc__.split("\n")[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable); default: own namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (needs cluster-wide RBAC)")
    p.add_argument("--peering", metavar="NAME", default=env.get("QUORUMKV_OPERATOR_PEERING"),
                   help="run in HA mode through this (Cluster)KopfPeering object")
    p.add_argument("--standalone", action="store_true",
                   help="no peering (the default unless --peering is given)")
    p.add_argument("--priority", type=int, default=None,
                   help="peering priority (default: derived from the hostname)")
    p.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                   help="kopf liveness endpoint URL, or 'off'")
    p.add_argument("--default-image", default=None, help="replica image when spec.image is unset")
    p.add_argument("--log-format", choices=("json", "full"), default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    base = Settings(**env_settings(env))  # type: ignore[arg-type]
    standalone = a.standalone or not a.peering
    return dataclasses.replace(
        base,
        namespaces=tuple(a.namespace),
        clusterwide=a.all_namespaces,
        standalone=standalone,
        peering_name=a.peering or base.peering_name,
        priority=a.priority if a.priority is not None else (
            0 if standalone else default_priority(env.get("POD_NAME"))),
        liveness_endpoint=None if a.liveness == "off" else a.liveness,
        default_image=a.default_image or base.default_image,
        log_format=a.log_format or base.log_format,
    ), a.verbose


def kopf_settings(s: Settings) -> kopf.OperatorSettings:
    ks = kopf.OperatorSettings()
    ks.peering.standalone = s.standalone
    ks.peering.name = s.peering_name
    ks.peering.priority = s.priority
    ks.peering.clusterwide = s.clusterwide
    ks.peering.mandatory = not s.standalone
    ks.posting.level = logging.INFO
    ks.posting.reporting_component = "quorumkv-operator"
    ks.scanning.disabled = True  # namespaced RBAC cannot watch CRDs or namespaces
    ks.persistence.finalizer = "quorumkv.dev/operator"
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="quorumkv.dev")
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="quorumkv.dev", key="last-handled-configuration")
    ks.watching.server_timeout = 270  # recycle watch requests before proxies drop them
    ks.networking.request_timeout = 30
    return ks


class QuietFilter(logging.Filter):
    """Drop the per-event success lines of the watch-only handlers and the liveness probe:
    they would be most of the log and say nothing (one `reconciled` line per cycle does)."""

    NOISY = ("Handler 'seen' succeeded", "Handler 'member_changed' succeeded",
             "Activity 'watch_freshness' succeeded", "Timer 'resync' succeeded",
             "Timer 'drive' succeeded")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISY)


def configure_logging(settings: Settings, verbose: bool) -> None:
    fmt = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=verbose, log_format=fmt)
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietFilter())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    settings, verbose = parse_args(argv)
    configure_logging(settings, verbose)
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    logging.getLogger(__name__).info(
        "starting quorumkv-operator",
        extra={"namespaces": list(settings.watched_namespaces) or "*",
               "standalone": settings.standalone, "priority": settings.priority,
               "default_image": settings.default_image})
    kopf.run(
        registry=registry,
        settings=kopf_settings(settings),
        standalone=settings.standalone,
        priority=settings.priority,
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.watched_namespaces),
    )


if __name__ == "__main__":
    main()
    sys.exit(0)
