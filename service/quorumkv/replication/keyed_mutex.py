"""One mutex per key, created on demand and dropped when nobody holds or waits for it.

Cheaper than an `asyncio.Lock` per key behind a context manager: the uncontended case (by
far the common one) is one dict insert and one delete.
"""

from __future__ import annotations

import asyncio
from collections import deque


class KeyedMutex:
    def __init__(self) -> None:
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    async def acquire(self, key: str) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            self._waiters[key] = deque()
            return
        future = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # it was handed to us as we were cancelled: pass it on
            else:
                waiters.remove(future)
            raise

    def release(self, key: str) -> None:
        waiters = self._waiters[key]
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        del self._waiters[key]
