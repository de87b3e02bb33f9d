"""Prometheus metrics of one replica; a registry per replica so tests can run several."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = RequestMetrics()
        r.register(self.requests)
        self.quorum_failures = Counter("quorumkv_quorum_failures",
                                       "Requests answered 503 for want of a quorum",
                                       ["op", "indeterminate"], registry=r)
        self.paths = LoopCounter("quorumkv_paxos_paths",
                                 "Protocol paths taken: fast/slow reads and writes, fast "
                                 "creates, forwards, conflicts, changes batched with "
                                 "others of their key, refusals answered from a read",
                                 ["path"])
        r.register(self.paths)
        self.peer_reachable = Gauge("quorumkv_peer_reachable", "1 if the peer answers",
                                    ["peer"], registry=r)
        self.peer_batch_size = Histogram("quorumkv_peer_batch_messages",
                                         "Protocol messages per peer request", ["peer"],
                                         buckets=SIZE_BUCKETS, registry=r)
        self.peer_batch_latency = Histogram("quorumkv_peer_batch_seconds",
                                            "Round trip of a peer batch", ["peer"],
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.commit_batch_size = Histogram("quorumkv_commit_batch_states",
                                           "Key states written per group commit",
                                           buckets=SIZE_BUCKETS, registry=r)
        self.fsync_latency = Histogram("quorumkv_commit_duration_seconds",
                                       "Time to write and fsync one group commit",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.commit_age = Gauge("quorumkv_commit_age_seconds",
                                "How long the group commit under way has waited for the "
                                "disk so far (0 when none is)", registry=r)
        self.keys = Gauge("quorumkv_keys", "Keys held by this replica (tombstones included)",
                          registry=r)
        self.repairs = Counter("quorumkv_antientropy_repairs",
                               "Keys repaired through the protocol by anti-entropy", registry=r)
        self.tombstones = Gauge("quorumkv_tombstones",
                                "Deleted keys whose tombstone this replica still holds",
                                registry=r)
        self.tombstones_collected = Counter(
            "quorumkv_tombstones_collected",
            "Tombstones this replica had every voter forget (as the keys' home)", registry=r)
        self.ready = Gauge("quorumkv_ready", "1 when this replica is ready to serve",
                           registry=r)

    def observe_request(self, op: str, status: int, seconds: float) -> None:
        self.requests.observe(op, status, seconds)

    def observe_commit(self, size: int, seconds: float) -> None:
        self.commit_batch_size.observe(size)
        self.fsync_latency.observe(seconds)

    def observe_batch(self, peer: str, size: int, seconds: float) -> None:
        self.peer_batch_size.labels(peer).observe(size)
        self.peer_batch_latency.labels(peer).observe(seconds)


class LoopCounter:
    """A labelled counter for what every request updates, exported on scrape.

    prometheus-client's Counter takes a lock and `labels()` builds a key on every update;
    with the request metrics that cost about 7% of read throughput (measured). The event
    loop is the only writer here, so a dict of plain integers does.
    """

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, labelnames
        self._counts: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self._counts[labels] = self._counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, count in sorted(self._counts.items()):
            family.add_metric(list(labels), count)
        yield family


class RequestMetrics:
    """Client request counts and latencies, kept as plain numbers (see `LoopCounter`)."""

    def __init__(self) -> None:
        self._counts = LoopCounter("quorumkv_requests", "Client requests by operation and outcome",
                                   ["op", "outcome"])
        self._latency: dict[str, tuple[list[int], list[float]]] = {}  # op -> buckets, [sum]

    def observe(self, op: str, status: int, seconds: float) -> None:
        self._counts.inc(op, str(status))
        latency = self._latency.get(op)
        if latency is None:
            latency = self._latency[op] = ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        latency[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        yield from self._counts.collect()
        latency = HistogramMetricFamily("quorumkv_request_duration_seconds",
                                        "Client request latency by operation", labels=["op"])
        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]  # as prometheus writes them
        for op, (buckets, total) in sorted(self._latency.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, buckets, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            latency.add_metric([op], cumulative, total[0])
        yield latency
