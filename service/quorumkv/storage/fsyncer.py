"""`fdatasync` in a child process, so neither the event loop nor a thread of ours waits on it.

Why a process: the replica's event loop must not block for the disk, and a worker thread that
fsyncs has to take the GIL back from the busy loop after every fsync. Under the PUT benchmark
that hand-over (a wake-up, a forced GIL switch, a second wake-up of the loop) cost more CPU
than the fsync itself and stretched each group commit from ~0.15 ms of disk time to ~1.2 ms
(bench/README.md, "Sixth pass"). A child process has its own GIL: the loop writes one byte
to a pipe and is woken once by the answer.

`fdatasync` flushes a file, not a descriptor: the child opens the log by its path and syncs
what the replica wrote through its own descriptor (PostgreSQL's checkpointer relies on the
same). After a compaction renames a new file over the path, `reopen` points the child at it.

The child runs `fsync_child.py` as a script (`python -I -S`): a few lines of the standard
library, no imports of the package.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
from pathlib import Path

from quorumkv.storage import fsync_child
from quorumkv.storage.fsync_child import ANSWER, COMMAND, REOPEN, SYNC, ZERO

CLOSE_TIMEOUT = 10.0  # seconds for the child to finish its last fsync and exit


class FsyncProcessError(OSError):
    """The child is gone: nothing more can be made durable."""


class Fsyncer:
    """The replica's side: `sync` resolves once the child's `fdatasync` of the file returned.

    Plain pipes, the answers watched by the event loop it is made on (no asyncio subprocess
    machinery): closing needs no loop and waits for the child's exit right there.
    """

    def __init__(self, path: Path, lock: int) -> None:
        """`lock` is the data directory's lock (`storage/dir_lock.py`): the child holds it
        until it exits."""
        self._child = subprocess.Popen(
            [sys.executable, "-I", "-S", fsync_child.__file__, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, pass_fds=(lock,))
        assert self._child.stdin is not None and self._child.stdout is not None
        self._requests = self._child.stdin.fileno()
        self._answers = self._child.stdout.fileno()
        os.set_blocking(self._answers, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._answers, self._on_answers)
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._buffer = b""
        self._gone = False

    @property
    def pid(self) -> int:
        return self._child.pid

    async def sync(self) -> None:
        """`fdatasync` of the file at the path: everything written to it before this call."""
        await self._ask(COMMAND.pack(SYNC, 0, 0))

    async def zero(self, offset: int, length: int) -> None:
        """Write zeros over `length` bytes from `offset` and make them durable. The caller
        writes nothing there meanwhile."""
        await self._ask(COMMAND.pack(ZERO, offset, length))

    def reopen(self) -> None:
        """Sync the file now at the path from the next `sync` on (a new file was renamed there)."""
        os.write(self._requests, COMMAND.pack(REOPEN, 0, 0))

    async def _ask(self, command: bytes) -> None:
        if self._gone:
            raise FsyncProcessError("the fsync process exited")
        done = self._loop.create_future()
        self._waiting.append(done)
        os.write(self._requests, command)  # a record into an all but empty pipe: never blocks
        await done

    def close(self) -> None:
        """Ends the child (it exits at the end of its input); call when no `sync` is waiting."""
        self._loop.remove_reader(self._answers)
        self._child.stdin.close()  # type: ignore[union-attr]
        try:
            self._child.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:  # stuck in an fsync that never ends
            self._child.kill()
            self._child.wait()
        self._child.stdout.close()  # type: ignore[union-attr]

    def _on_answers(self) -> None:
        data = os.read(self._answers, 4096)
        if not data:
            self._loop.remove_reader(self._answers)
            self._gone = True
            while self._waiting:
                self._waiting.popleft().set_exception(
                    FsyncProcessError("the fsync process exited"))
            return
        self._buffer += data
        while len(self._buffer) >= ANSWER.size and self._waiting:
            (error,) = ANSWER.unpack_from(self._buffer)
            self._buffer = self._buffer[ANSWER.size:]
            done = self._waiting.popleft()
            if error:
                done.set_exception(OSError(error, f"fsync process: {os.strerror(error)}"))
            else:
                done.set_result(None)
