"""The group committer over real SQLite files: what is durable when, and how it batches."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from quorumkv.core.acceptor import AcceptorState
from quorumkv.core.ballot import Ballot
from quorumkv.core.register import Register
from quorumkv.storage.committer import INLINE_SYNC_SLOW, GroupCommitter
from quorumkv.storage.sqlite import SQLiteStorage


def state(counter: int, value: bytes) -> AcceptorState:
    ballot = Ballot(counter, "0", 1)
    return AcceptorState(ballot, ballot, Register(value, ballot))


async def test_a_staged_state_is_on_disk_once_its_future_resolves(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path)
    committer = GroupCommitter(storage)
    durable = committer.stage("k", state(1, b"v1"))
    assert committer.durable("k") is durable
    await durable
    assert committer.durable("k") is None
    reopened = dict(SQLiteStorage(tmp_path).load())  # what a restart would see
    assert reopened == {"k": state(1, b"v1")}
    await committer.close()


async def test_what_arrives_during_a_commit_shares_the_next_one(tmp_path: Path) -> None:
    sizes: list[int] = []
    committer = GroupCommitter(SQLiteStorage(tmp_path), lambda size, _: sizes.append(size))
    first = committer.stage("a", state(1, b"a"))
    await asyncio.sleep(0)  # the first commit starts with "a" alone
    rest = [committer.stage(f"k{i}", state(1, b"x")) for i in range(50)]
    assert len({id(f) for f in rest}) == 1  # one future: one commit for all fifty
    await asyncio.gather(first, *rest)
    assert sizes == [1, 50]
    await committer.close()


class StallingDisk(SQLiteStorage):
    """Real SQLite whose commits take `stall` seconds more, as a disk under pressure does."""

    stall = 0.0

    def sync(self) -> None:
        time.sleep(self.stall)
        super().sync()


async def test_after_a_slow_commit_the_loop_keeps_running_during_the_next(
    tmp_path: Path,
) -> None:
    storage = StallingDisk(tmp_path)
    committer = GroupCommitter(storage)
    await committer.stage("warm", state(1, b"w"))  # quick: small commits may run inline
    storage.stall = 10 * INLINE_SYNC_SLOW
    await committer.stage("slow", state(1, b"s"))  # inline or not, it took long
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await committer.stage("next", state(2, b"n"))  # must go to the storage thread
    assert ticks - before >= 3, "the event loop was blocked during the commit"
    running.cancel()
    await committer.close()
