"""Group commit: one fsync per batch of everything that arrived meanwhile.

Callers stage a key's new state and await the returned future; it resolves once the batch that
holds it is durable. While one batch is being written the next one fills up, so under load
each fsync covers many operations (FIELD-NOTES: this, not the engine, decides throughput).
Small commits on an idle replica skip the storage thread (see INLINE_SYNC_MAX).
A failed commit is fatal for the replica: its memory is then ahead of its disk, and replying
from it could acknowledge what a crash would lose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from quorumkv.core.acceptor import AcceptorState
from quorumkv.storage.base import Storage

CommitObserver = Callable[[int, float], None]  # (batch size, seconds spent writing + fsync)

# Commits of at most this many states, after one that small, fsync on the event loop itself.
# A lightly loaded replica waits ~0.2 ms for the fsync either way, and handing it to the
# storage thread and back costs two thread wake-ups (~0.13 ms measured here); under load the
# batches grow past this and the loop keeps working while the thread fsyncs.
# Measured (bench, 1 connection): PUT p50 1.09-1.18 -> 1.01 ms; 64 connections unchanged.
# A disk that stalls would freeze the loop (heartbeats, reads) meanwhile: once a commit took
# longer than INLINE_SYNC_SLOW, commits go back to the thread until one is quick again.
INLINE_SYNC_MAX = 4
INLINE_SYNC_SLOW = 0.002


class GroupCommitter:
    def __init__(self, storage: Storage, observe: CommitObserver | None = None) -> None:
        self._storage = storage
        self._observe = observe
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="quorumkv-storage")
        self._pending: dict[str, AcceptorState] = {}
        self._pending_meta: dict[str, str] = {}
        self._pending_done: asyncio.Future[None] | None = None
        self._inflight: dict[str, AcceptorState] = {}
        self._inflight_done: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self._last_small_and_quick = True  # the previous commit: an idle replica, a sound disk

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

    def _schedule(self) -> asyncio.Future[None]:
        if self.failure is not None:
            raise RuntimeError("storage failed earlier; refusing new writes") from self.failure
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return self._pending_done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending_done is not None:
                done = self._pending_done
                self._inflight, self._inflight_done = self._pending, done
                meta = self._pending_meta
                self._pending, self._pending_meta, self._pending_done = {}, {}, None
                started = time.perf_counter()
                try:
                    self._storage.write(self._inflight, meta)
                    size = len(self._inflight) + len(meta)
                    if size <= INLINE_SYNC_MAX and self._last_small_and_quick:
                        await asyncio.sleep(0)  # what this step queued to send goes out first
                        self._storage.sync()
                    else:
                        await loop.run_in_executor(self._executor, self._storage.sync)
                    seconds = time.perf_counter() - started
                    self._last_small_and_quick = size <= INLINE_SYNC_MAX \
                        and seconds < INLINE_SYNC_SLOW
                except Exception as exc:
                    self.failure = exc
                    done.set_exception(exc)
                    if self._pending_done is not None:
                        self._pending_done.set_exception(exc)
                    raise
                if self._observe is not None:
                    self._observe(size, seconds)
                self._inflight, self._inflight_done = {}, None
                done.set_result(None)
        finally:
            self._flusher = None

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._storage.close)
        self._executor.shutdown(wait=True)
