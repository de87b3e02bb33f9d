"""The protocol under a simulated hostile network, many seeds, exact safety checks."""

from __future__ import annotations

import pytest
from quorumkv.core import proposer
from simulation import Faults, Simulation

HOSTILE = Faults(loss=0.1, duplicate=0.1, max_delay=20, crash_rate=0.002, downtime=80,
                 fast_create_rate=0.7)


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


PROMISE_LOSS = dict(loss=0.1, duplicate=0.1, max_delay=20, crash_rate=0.01, downtime=20,
                    fast_create_rate=0.7)


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
                  collect_rate=0.05, fast_create_rate=0.7)


@pytest.mark.parametrize("seed", range(40))
def test_tombstone_collection_is_safe(seed: int) -> None:
    """Deletes, creates and CAS on two keys while a collector purges their tombstones."""
    sim = Simulation(seed, acceptors=3 if seed % 2 else 5, clients=4, ops=60, keys=2,
                     faults=Faults(**COLLECTING))  # type: ignore[arg-type]
    sim.run()
    assert sim.violations() == []
    assert sim.summary().get("ok", 0) > 90  # of 240; the rest mostly indeterminate or failed


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


# -- fast creates (Fast Paxos rounds for keys nobody holds a vote for) ---------------------

FAST_CREATES = dict(loss=0.05, duplicate=0.1, max_delay=20, crash_rate=0.002, downtime=40,
                    collect_rate=0.05, fast_create_rate=1.0)


def fast_create_runs(**broken: bool) -> list[Simulation]:
    runs = []
    for seed in range(60):
        sim = Simulation(seed, acceptors=3 if seed % 2 else 5, clients=4, ops=60, keys=8,
                         faults=Faults(**FAST_CREATES, **broken))  # type: ignore[arg-type]
        sim.run()
        runs.append(sim)
    return runs


def test_fast_creates_are_safe_and_exercised() -> None:
    """The safety runs above include fast creates; here every create tries one first, on
    keys that start absent and that deletes and tombstone purges make absent again. Some are
    refused by a voter and settled by a classic round."""
    runs = fast_create_runs()
    assert [sim.violations() for sim in runs if sim.violations()] == []
    assert sum(sim.summary()["fast_creates"] for sim in runs) > 50
    assert sum(sim.summary()["settled_creates"] for sim in runs) > 0  # refused by a voter
    # reads that waited for all of a fast vote's voters, reads that gave up waiting, and
    # reads done with the older value a quorum agreed on while a newer one was in flight
    assert sum(sim.summary()["fast_vote_reads"] for sim in runs) > 5
    assert sum(sim.summary()["reads_gave_up"] for sim in runs) > 5
    assert sum(sim.summary()["reads_past_writes"] for sim in runs) > 5


def test_checker_catches_reads_of_votes_not_known_chosen() -> None:
    """A read may skip the write-back only when the newest vote it heard is chosen: a
    regular vote held by a quorum, a fast vote held by every voter it names. A newer vote
    only some hold may still lose to a value a later prepare adopts."""
    assert any(sim.violations() for sim in fast_create_runs(read_unchosen=True))


def test_checker_catches_fast_creates_done_on_a_quorum() -> None:
    """A fast vote is chosen only once every acceptor cast it: acknowledging it when a
    quorum did loses creates that a later prepare does not adopt."""
    assert any(sim.violations() for sim in fast_create_runs(fast_on_quorum=True))


def test_checker_catches_fast_votes_adopted_by_ballot_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The classic rule (highest ballot wins) for fast votes: a stray fast vote of a create
    that lost can override a value chosen at a lower ballot."""
    monkeypatch.setattr(proposer, "choose",
                        lambda replies: max((r for _, r in replies), key=lambda r: r.accepted))
    assert any(sim.violations() for sim in fast_create_runs())
