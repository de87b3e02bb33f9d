"""Which replica is the acting home, and when a replica settles (`Coordinator.acting_home`,
`Coordinator.note_readiness`): pure bookkeeping over the peers' last answers, tested with
stand-ins for the links and the membership."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from quorumkv.replication import coordinator as coordinator_module
from quorumkv.replication.coordinator import Coordinator

VOTERS = frozenset({"0", "1", "2"})


class Link(SimpleNamespace):
    """What a `PeerLink` knows from the peer's last answer."""

    def __init__(self, *, answering: bool = True, settled: bool = True,
                 ready: bool = True) -> None:
        super().__init__(answering=answering, settled=settled, ready=ready)

    def answered_within(self, seconds: float) -> bool:
        return bool(self.answering)


def replica(node: str, links: dict[str, Link], *, boot: int = 2) -> Coordinator:
    membership = SimpleNamespace(node_id=node, config=SimpleNamespace(voters=VOTERS))
    return Coordinator(membership, boot, local=None, links=links,  # type: ignore[arg-type]
                       timeout=1.0)


@pytest.fixture(autouse=True)
def short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "SETTLE", 0.05)


def settle(replica: Coordinator) -> None:
    """Ready for longer than SETTLE."""
    replica.note_readiness(True)
    time.sleep(0.06)
    replica.note_readiness(True)


def test_a_home_back_from_a_restart_leaves_the_home_to_the_stand_in_until_settled() -> None:
    home = replica("0", {"1": Link(), "2": Link()})
    assert not home.settled() and home.acting_home() == "1"
    home.note_readiness(True)
    assert not home.settled() and home.acting_home() == "1"  # ready, not for SETTLE yet
    settle(home)
    assert home.settled() and home.acting_home() == "0"
    home.note_readiness(False)  # e.g. cut from its peers
    assert not home.settled() and home.acting_home() == "1"


def test_the_peers_follow_what_the_home_says_of_itself() -> None:
    links = {"0": Link(answering=False), "2": Link()}
    stand_in = replica("1", links)
    settle(stand_in)  # while the home is away
    assert stand_in.acting_home() == "1"
    links["0"].answering, links["0"].settled = True, False  # back, not settled yet
    stand_in.note_readiness(True)
    assert stand_in.settled() and stand_in.acting_home() == "1"
    links["0"].settled = True
    assert stand_in.acting_home() == "0"
    links["0"].answering = False
    assert stand_in.acting_home() == "1"


def test_the_first_start_of_a_data_directory_is_settled_until_it_loses_readiness() -> None:
    fresh = replica("0", {"1": Link(settled=False), "2": Link(settled=False)}, boot=1)
    assert fresh.settled()
    fresh.note_readiness(False)  # catching up at its first start: nothing to hand back
    assert fresh.settled() and fresh.acting_home() == "0"
    fresh.note_readiness(True)
    fresh.note_readiness(False)
    assert not fresh.settled()


def test_when_nobody_is_settled_the_first_that_answers_is_the_home() -> None:
    links = {"0": Link(answering=False, settled=False), "2": Link(settled=False)}
    assert replica("1", links).acting_home() == "1"
    links["0"].answering = True
    assert replica("1", links).acting_home() == "0"


def test_a_replica_waits_for_a_ready_one_before_it_to_settle_first() -> None:
    """After a restart of every replica: settling before 0 would take the home from it
    for a moment."""
    links: dict[str, Any] = {"0": Link(settled=False), "2": Link(settled=False)}
    second = replica("1", links)
    settle(second)
    assert not second.settled() and second.acting_home() == "0"
    links["0"].settled = True
    settle(second)
    assert second.settled() and second.acting_home() == "0"


def test_but_not_for_one_that_is_not_ready() -> None:
    """One that answers but cannot reach a quorum may never settle: waiting for it stopped
    every write."""
    links = {"0": Link(settled=False, ready=False), "2": Link(settled=False)}
    second = replica("1", links)
    settle(second)
    assert second.settled() and second.acting_home() == "1"
