"""One process tree per data directory: an exclusive `flock` held for the replica's whole life.

Two replicas on one directory would interleave their frames and each replay the other's as
its own. The lock also covers the replica's fsync child, which inherits the descriptor: after
a `kill -9` of the replica the child finishes what it was doing (an fsync, or writing zeros
ahead of the log's end) and exits, and only then can a new replica open the directory, so
those zeros never land on the new replica's frames.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from quorumkv.storage.base import StorageError

log = logging.getLogger(__name__)

LOCK_NAME = "quorumkv.lock"
LOCK_WAIT = 30.0  # seconds to wait for an earlier process to let go of the directory


class DataDirInUse(StorageError):
    """Another process holds the data directory."""


def lock_data_dir(data_dir: Path, wait: float = LOCK_WAIT) -> int:
    """The descriptor holding the lock; waits up to `wait` seconds for it."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise DataDirInUse(
                    f"{data_dir} is still in use by another process after {wait:.0f} s: "
                    "another replica, or the fsync process of one that just stopped") from None
            if not waiting:
                log.warning("data directory in use by another process; waiting",
                            extra={"data_dir": str(data_dir), "wait_seconds": wait})
                waiting = True
            time.sleep(0.05)
