"""One proposal per key at a time; the changes that arrive meanwhile go together in the next.

A coordinator must not run two proposals of one key at once (they would share a ballot).
Queuing the changes of a hot key one behind the other made each wait for all the round trips
before it: measured on 10 hot keys, half reads and half writes at 64 connections, p99 53 ms
against etcd's 26, and a Paxos round per write. Here the changes that queued while a round
was in flight are proposed as one `Batch` in the next round, applied in the order they
arrived, each told its own outcome: the way a leader appends many writes with one fsync.

The uncontended case, by far the common one, costs a dict insert, an empty deque and a delete.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from quorumkv.core.changes import Batch, Change, Folded, Outcome, Single
from quorumkv.core.register import Register
from quorumkv.errors import QuorumUnavailable

log = logging.getLogger("quorumkv.coordinator")

MAX_BATCH = 256  # changes per round: only the last state travels, so size hardly matters

Result = tuple[Outcome, Register]
Propose = Callable[[str, Change, float], Awaitable[tuple[Outcome | Folded, Register]]]


class _Waiting(NamedTuple):
    change: Single
    deadline: float  # loop time
    result: asyncio.Future[Result]


class KeyQueue:
    def __init__(self, propose: Propose, *,
                 on_batch: Callable[[int], None] | None = None) -> None:
        """`propose(key, change, deadline)` runs one proposal; `on_batch(n)` is told the
        size of each batch of two or more changes."""
        self._propose = propose
        self._on_batch = on_batch or (lambda size: None)
        self._waiting: dict[str, deque[_Waiting]] = {}  # keys with a proposal in flight

    async def run(self, key: str, change: Single, deadline: float) -> Result:
        """Apply `change` to `key`, alone or in a batch; raises `QuorumUnavailable`."""
        waiting = self._waiting.get(key)
        if waiting is not None:
            result: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            waiting.append(_Waiting(change, deadline, result))
            return await result
        self._waiting[key] = deque()
        try:
            return _single(await self._propose(key, change, deadline))
        finally:
            self._start_next(key)

    def _start_next(self, key: str) -> None:
        """Propose what waits for `key` as the next round, or mark the key idle."""
        waiting = self._waiting[key]
        if not waiting:  # the usual case: nothing queued behind the round
            del self._waiting[key]
            return
        now = asyncio.get_running_loop().time()
        batch: list[_Waiting] = []
        while waiting and len(batch) < MAX_BATCH:
            entry = waiting.popleft()
            if entry.result.done():
                continue  # its caller stopped waiting before it was proposed
            if entry.deadline <= now:
                _fail(entry, QuorumUnavailable(f"timed out behind earlier changes of {key!r}"))
                continue
            batch.append(entry)
        if not batch:
            del self._waiting[key]
            return
        asyncio.get_running_loop().create_task(self._run_batch(key, batch))

    async def _run_batch(self, key: str, batch: list[_Waiting]) -> None:
        deadline = min(entry.deadline for entry in batch)
        try:
            if len(batch) == 1:
                results = [_single(await self._propose(key, batch[0].change, deadline))]
            else:
                self._on_batch(len(batch))
                folded, _ = await self._propose(
                    key, Batch(tuple(entry.change for entry in batch)), deadline)
                assert isinstance(folded, Folded)
                results = [(outcome, register) for register, outcome in folded.results]
        except QuorumUnavailable as exc:
            for entry in batch:  # the batch is one change: all of it happened, or none
                _fail(entry, QuorumUnavailable(exc.detail, indeterminate=exc.indeterminate))
        except Exception as exc:  # a bug: fail the batch (indeterminate), keep the key going
            log.exception("a batch of changes failed", extra={"key": key})
            for entry in batch:
                _fail(entry, QuorumUnavailable(f"internal error: {exc}", indeterminate=True))
        else:
            for entry, result in zip(batch, results, strict=True):
                if not entry.result.done():
                    entry.result.set_result(result)
        finally:
            self._start_next(key)


def _single(done: tuple[Outcome | Folded, Register]) -> Result:
    outcome, register = done
    assert isinstance(outcome, Outcome)
    return outcome, register


def _fail(entry: _Waiting, exc: QuorumUnavailable) -> None:
    if not entry.result.done():
        entry.result.set_exception(exc)
        entry.result.exception()  # a caller that stopped waiting must not warn
