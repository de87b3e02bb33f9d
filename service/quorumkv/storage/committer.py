"""Group commit: one fsync per batch of everything that arrived meanwhile.

Callers stage a key's new state and await the returned future; it resolves once the batch that
holds it is durable. While one batch is being written the next one fills up, so under load
each fsync covers many operations (FIELD-NOTES: this, not the engine, decides throughput).
A failed commit is fatal for the replica: its memory is then ahead of its disk, and replying
from it could acknowledge what a crash would lose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from quorumkv.core.acceptor import AcceptorState
from quorumkv.storage.base import Storage

CommitObserver = Callable[[int, float], None]  # (batch size, seconds spent writing + fsync)
FailureHandler = Callable[[BaseException], None]
CLOSE_TIMEOUT = 10.0  # seconds a stopping replica waits for its last commit


class GroupCommitter:
    def __init__(self, storage: Storage, observe: CommitObserver | None = None,
                 on_failure: FailureHandler | None = None) -> None:
        """`on_failure` is called once, with the error, when a commit fails."""
        self._storage = storage
        self._observe = observe
        self._on_failure = on_failure
        self._pending: dict[str, AcceptorState] = {}
        self._pending_meta: dict[str, str] = {}
        self._pending_done: asyncio.Future[None] | None = None
        self._inflight: dict[str, AcceptorState] = {}
        self._inflight_done: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._inflight_since: float | None = None  # time.monotonic() the commit started
        self.failure: BaseException | None = None

    def stage(self, key: str, state: AcceptorState) -> asyncio.Future[None]:
        self._pending[key] = state
        return self._schedule()

    def stage_meta(self, name: str, value: str) -> asyncio.Future[None]:
        self._pending_meta[name] = value
        return self._schedule()

    def durable(self, key: str) -> asyncio.Future[None] | None:
        """The commit that `key`'s latest staged state waits for, or None if it is durable."""
        if key in self._pending:
            return self._pending_done
        if key in self._inflight:
            return self._inflight_done
        return None

    def commit_age(self) -> float:
        """Seconds the commit being written has waited for the disk so far; 0 when none is.

        A disk (or fsync process) that stopped answering shows here, and nowhere else: the
        latency histogram records finished commits only (found by testing: a stopped fsync
        process left the replica ready while none of its writes could be acknowledged)."""
        if self._inflight_since is None:
            return 0.0
        return time.monotonic() - self._inflight_since

    def _schedule(self) -> asyncio.Future[None]:
        if self.failure is not None:
            raise RuntimeError("storage failed earlier; refusing new writes") from self.failure
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return self._pending_done

    async def _flush(self) -> None:
        try:
            while self._pending_done is not None:
                done = self._pending_done
                self._inflight, self._inflight_done = self._pending, done
                meta = self._pending_meta
                self._pending, self._pending_meta, self._pending_done = {}, {}, None
                started = self._inflight_since = time.monotonic()
                try:
                    self._storage.write(self._inflight, meta)
                    await self._storage.sync()
                    seconds = time.monotonic() - started
                except Exception as exc:
                    self.failure = exc
                    done.set_exception(exc)
                    if self._pending_done is not None:
                        self._pending_done.set_exception(exc)
                    if self._on_failure is not None:
                        self._on_failure(exc)
                    raise
                if self._observe is not None:
                    self._observe(len(self._inflight) + len(meta), seconds)
                self._inflight, self._inflight_done = {}, None
                done.set_result(None)
        finally:
            self._flusher = self._inflight_since = None

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Let the commit under way finish, for up to `timeout` seconds, then close the
        storage. A disk that never answers must not keep the replica from stopping (found by
        testing: SIGTERM left it running while its fsync process was stopped)."""
        if self._flusher is not None:
            done, _ = await asyncio.wait([self._flusher], timeout=timeout)
            if not done:
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)
        self._storage.close()
