"""The command line maps to settings and kopf settings as documented."""

from __future__ import annotations

import logging

import pytest
from quorumkv_operator.cli import QuietFilter, kopf_settings, parse_args
from quorumkv_operator.settings import default_priority


def test_defaults_are_standalone_json_with_liveness() -> None:
    s, verbose = parse_args([], env={})
    assert s.standalone and s.priority == 0 and not verbose
    assert s.log_format == "json"
    assert s.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert s.watched_namespaces == ("default",)


def test_namespaces_and_all_namespaces() -> None:
    s, _ = parse_args(["-n", "a", "-n", "b"], env={})
    assert s.watched_namespaces == ("a", "b") and not s.clusterwide
    s, _ = parse_args(["-A"], env={})
    assert s.clusterwide and s.watched_namespaces == ()
    with pytest.raises(SystemExit):
        parse_args(["-A", "-n", "x"], env={})


def test_peering_priority_comes_from_the_pod_name() -> None:
    s, _ = parse_args(["--peering", "p"], env={"POD_NAME": "op-abc"})
    assert not s.standalone and s.peering_name == "p"
    assert s.priority == default_priority("op-abc") > 0
    assert default_priority("op-abc") != default_priority("op-abd")
    ks = kopf_settings(s)
    assert ks.peering.mandatory and not ks.peering.standalone and ks.peering.priority == s.priority


def test_environment_sets_image_and_domain() -> None:
    s, _ = parse_args([], env={"QUORUMKV_OPERATOR_DEFAULT_IMAGE": "img:9",
                               "QUORUMKV_OPERATOR_CLUSTER_DOMAIN": "corp.local"})
    assert (s.default_image, s.cluster_domain) == ("img:9", "corp.local")
    assert not s.volume_permissions_init
    s, _ = parse_args([], env={"QUORUMKV_OPERATOR_VOLUME_PERMISSIONS_INIT": "true"})
    assert s.volume_permissions_init


def test_kopf_bookkeeping_stays_out_of_status() -> None:
    ks = kopf_settings(parse_args([], env={})[0])
    assert ks.scanning.disabled
    assert ks.persistence.finalizer == "quorumkv.dev/operator"


def test_the_log_drops_kopfs_per_tick_success_lines_only() -> None:
    """The drive timer fires every 2 s per cluster: its success lines were most of the log."""
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, msg, None, None)

    quiet = QuietFilter()
    for noise in ("Timer 'drive' succeeded.", "Timer 'resync' succeeded.",
                  "Handler 'seen' succeeded."):
        assert not quiet.filter(record(noise))
    for news in ("Handler 'reconcile' succeeded.", "Timer 'drive' failed with an exception.",
                 "reconciled"):
        assert quiet.filter(record(news))
