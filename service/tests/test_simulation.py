"""The protocol under a simulated hostile network, many seeds, exact safety checks."""

from __future__ import annotations

import pytest
from simulation import Faults, Simulation

HOSTILE = Faults(loss=0.1, duplicate=0.1, max_delay=20, crash_rate=0.002, downtime=80)


@pytest.mark.parametrize("seed", range(40))
def test_safe_under_loss_duplication_reordering_and_crashes(seed: int) -> None:
    sim = Simulation(seed, acceptors=3 if seed % 2 else 5, clients=4, ops=30, keys=2,
                     faults=HOSTILE)
    sim.run()
    assert sim.violations() == []
    summary = sim.summary()
    assert summary.get("ok", 0) > 20, summary  # the protocol made progress despite faults


def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        sim = Simulation(7, acceptors=3, clients=3, ops=20, keys=1, faults=HOSTILE)
        sim.run()
        runs.append([(op.invoked, op.completed, op.outcome, op.version) for op in sim.history])
    assert runs[0] == runs[1]


def test_no_faults_no_contention_every_operation_completes() -> None:
    sim = Simulation(1, acceptors=3, clients=1, ops=200, keys=3, faults=Faults())
    sim.run()
    assert sim.violations() == []
    assert sim.summary().get("ok") == 200


def test_contention_without_faults_mostly_completes() -> None:
    """Dueling proposers on few keys: safe, and backoff lets nearly all finish."""
    sim = Simulation(1, acceptors=3, clients=5, ops=40, keys=3, faults=Faults())
    sim.run()
    assert sim.violations() == []
    assert sim.summary().get("ok", 0) >= 180


PROMISE_LOSS = dict(loss=0.1, duplicate=0.1, max_delay=20, crash_rate=0.01, downtime=20)


def test_promises_lost_on_restart_are_covered_by_the_floor() -> None:
    for seed in range(100):
        sim = Simulation(seed, acceptors=3, clients=4, ops=40, keys=1,
                         faults=Faults(**PROMISE_LOSS))  # type: ignore[arg-type]
        sim.run()
        assert sim.violations() == [], seed


def test_checker_catches_promise_loss_without_floor() -> None:
    """Proves the simulation exercises lost promises: without the floor they break safety."""
    caught = 0
    for seed in range(100):
        sim = Simulation(seed, acceptors=3, clients=4, ops=40, keys=1,
                         faults=Faults(**PROMISE_LOSS, no_floor=True))  # type: ignore[arg-type]
        sim.run()
        caught += bool(sim.violations())
    assert caught > 0


def test_checker_catches_acceptor_amnesia() -> None:
    """The deliberately broken mode: acceptors that forget on restart must be caught."""
    caught = 0
    for seed in range(30):
        faults = Faults(loss=0.05, max_delay=10, crash_rate=0.01, downtime=30, amnesia=True)
        sim = Simulation(seed, acceptors=3, clients=4, ops=30, keys=1, faults=faults)
        sim.run()
        caught += bool(sim.violations())
    assert caught > 0


COLLECTING = dict(loss=0.1, duplicate=0.1, max_delay=20, crash_rate=0.002, downtime=80,
                  collect_rate=0.05)


@pytest.mark.parametrize("seed", range(40))
def test_tombstone_collection_is_safe(seed: int) -> None:
    """Deletes, creates and CAS on two keys while a collector purges their tombstones."""
    sim = Simulation(seed, acceptors=3 if seed % 2 else 5, clients=4, ops=60, keys=2,
                     faults=Faults(**COLLECTING))  # type: ignore[arg-type]
    sim.run()
    assert sim.violations() == []
    assert sim.summary().get("ok", 0) > 100


def test_collection_purges_most_runs() -> None:
    """The collection test above is not vacuous: tombstones do get purged."""
    purged = []
    for seed in range(10):
        sim = Simulation(seed, acceptors=3, clients=4, ops=60, keys=2,
                         faults=Faults(**COLLECTING))  # type: ignore[arg-type]
        sim.run()
        purged.append(sim.summary()["purged"])
    assert sum(p > 0 for p in purged) >= 8, purged


@pytest.mark.parametrize("broken", ["collect_on_quorum", "purge_without_floor"])
def test_checker_catches_unsafe_tombstone_collection(broken: str) -> None:
    """Purging once only a quorum holds the tombstone lets an older value come back; a purge
    that forgets the key's promise lets a stale proposer win. Both must be caught."""
    caught = 0
    for seed in range(40):
        sim = Simulation(seed, acceptors=3 if seed % 2 else 5, clients=4, ops=60, keys=2,
                         faults=Faults(**COLLECTING, **{broken: True}))  # type: ignore[arg-type]
        sim.run()
        caught += bool(sim.violations())
    assert caught > 0
