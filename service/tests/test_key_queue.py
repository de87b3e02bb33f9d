"""The per-key queue of a coordinator: what waits behind a round in flight goes in the next.

`propose` here is the pure change function applied to an in-memory register, standing in
for a Paxos round (which the integration and Jepsen tests run for real): these tests are
about who is proposed with whom, in which order, and who is told what.
"""

from __future__ import annotations

import asyncio

import pytest
from quorumkv.core.ballot import Ballot
from quorumkv.core.changes import (
    Batch,
    Change,
    Delete,
    Folded,
    Identity,
    Outcome,
    Put,
    apply_change,
)
from quorumkv.core.register import EMPTY, Register
from quorumkv.errors import QuorumUnavailable
from quorumkv.replication.key_queue import KeyQueue


class Rounds:
    """Proposals, each held until `release` lets it finish."""

    def __init__(self) -> None:
        self.registers: dict[str, Register] = {}
        self.proposed: list[Change] = []
        self.gates: list[asyncio.Event] = []
        self.fail_with: QuorumUnavailable | None = None

    async def propose(self, key: str, change: Change,
                      deadline: float) -> tuple[Outcome | Folded, Register]:
        self.proposed.append(change)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        register, outcome = apply_change(change, self.registers.get(key, EMPTY),
                                         Ballot(len(self.proposed), "a", 1))
        self.registers[key] = register
        return outcome, register

    async def release(self) -> None:
        """Let the oldest proposal in flight finish, then let the queue start the next."""
        for gate in self.gates:
            if not gate.is_set():
                gate.set()
                break
        for _ in range(5):
            await asyncio.sleep(0)


def deadline(seconds: float = 10.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_changes_that_wait_behind_a_round_go_together_in_arrival_order() -> None:
    rounds = Rounds()
    queue = KeyQueue(rounds.propose)
    first = asyncio.create_task(queue.run("k", Put(b"1"), deadline()))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(queue.run("k", change, deadline()))
               for change in (Put(b"2"), Identity(), Put(b"3", create_only=True), Delete())]
    await asyncio.sleep(0)
    assert rounds.proposed == [Put(b"1")]  # one round in flight per key
    await rounds.release()
    assert await first == (Outcome.CREATED, Register(b"1", Ballot(1, "a", 1)))
    assert rounds.proposed[1] == Batch((Put(b"2"), Identity(), Put(b"3", create_only=True),
                                        Delete()))
    await rounds.release()
    results = [await task for task in waiting]
    assert [outcome for outcome, _ in results] == [
        Outcome.REPLACED, Outcome.READ, Outcome.PRECONDITION_FAILED, Outcome.DELETED]
    assert results[0][1] == results[1][1] == results[2][1]  # the state after the second put
    assert results[3][1] == rounds.registers["k"] == Register(None, Ballot(2, "a", 1))


async def test_keys_do_not_wait_for_each_other() -> None:
    rounds = Rounds()
    queue = KeyQueue(rounds.propose)
    tasks = [asyncio.create_task(queue.run(key, Put(b"v"), deadline())) for key in "abc"]
    await asyncio.sleep(0)
    assert len(rounds.proposed) == 3
    for _ in tasks:
        await rounds.release()
    assert [outcome for outcome, _ in [await task for task in tasks]] == [Outcome.CREATED] * 3


async def test_a_failed_batch_tells_every_change_of_it_the_same() -> None:
    rounds = Rounds()
    queue = KeyQueue(rounds.propose)
    first = asyncio.create_task(queue.run("k", Put(b"1"), deadline()))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(queue.run("k", Put(b"%d" % i), deadline()))
               for i in range(3)]
    await asyncio.sleep(0)
    await rounds.release()
    await first
    rounds.fail_with = QuorumUnavailable("no quorum", indeterminate=True)
    await rounds.release()
    for task in waiting:
        with pytest.raises(QuorumUnavailable) as failed:
            await task
        assert failed.value.indeterminate
    assert len(rounds.proposed) == 2  # one batch, never retried blindly


async def test_a_change_whose_deadline_passed_while_waiting_is_not_proposed() -> None:
    rounds = Rounds()
    queue = KeyQueue(rounds.propose)
    first = asyncio.create_task(queue.run("k", Put(b"1"), deadline()))
    await asyncio.sleep(0)
    late = asyncio.create_task(queue.run("k", Put(b"late"), deadline(0.01)))
    cancelled = asyncio.create_task(queue.run("k", Put(b"gone"), deadline()))
    on_time = asyncio.create_task(queue.run("k", Put(b"2"), deadline()))
    await asyncio.sleep(0.02)
    cancelled.cancel()
    await rounds.release()
    await first
    with pytest.raises(QuorumUnavailable) as failed:
        await late
    assert not failed.value.indeterminate  # never proposed: certainly not applied
    assert rounds.proposed[1] == Put(b"2")  # alone: no batch of one
    await rounds.release()
    assert (await on_time)[0] is Outcome.REPLACED
    assert cancelled.cancelled()
