"""Log storage: every commit appends one checksummed frame to a file and `fdatasync`s it.

Why not SQLite (used until 2026-11-26): the replica keeps every key's state in memory, so
the disk only has to record changes and give them back at start. SQLite did more — a B-tree
page rewritten into its WAL for every key of a batch, and checkpoints copying pages back —
and under the PUT benchmark that cost about a sixth of the cluster's CPU per write (appending
frames instead, A/B: 5.2k and 6.2k -> 6.0k and 6.9k puts/s, bench/README.md). What SQLite
gave for free is done here explicitly:

- **Atomic batches.** A frame is `length, crc32, body`; at start the log is read up to the
  first frame that is incomplete or fails its checksum, and cut there. A batch is
  acknowledged only after its `fdatasync`, and the next one is written only then, so a
  crash can tear the last frame only: what is cut was never acknowledged. The cut is
  logged. A broken frame with a whole one somewhere after it is no torn write but damage
  (a bad disk, a stray write): the replica refuses to start rather than cut acknowledged
  commits, and the boot counter and promise floor with them.
- **Bounded size.** The log is rewritten as one snapshot of the live states once it is
  both over `COMPACT_MIN_BYTES` and twice the size it had after the last rewrite. The
  snapshot is written by a thread of its own from a copy of the states (immutable tuples,
  so a dict copy is a consistent cut) while commits go on; the frames appended meanwhile
  are copied after it, then it replaces the log by an atomic rename.
- **Durability off the event loop.** `write` hands the frame to the OS on the loop; `sync`
  has a child process `fdatasync` the file (`storage/fsyncer.py`) and awaits its answer.
- **Preallocated.** Frames are written over zeros written (and synced) ahead of them, so an
  `fdatasync` has only the data to write: appending to the end also changed the file's size
  and allocated blocks, three device writes per sync instead of two here (bench/README.md,
  "Sixth pass"). The log ends at the first zero frame length; anything but zeros after it
  is a torn frame.
- **Upgrades.** A data directory of the SQLite era is converted once, at first start
  (`storage/sqlite_import.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from quorumkv.core.acceptor import INITIAL, AcceptorState
from quorumkv.storage.base import StorageError
from quorumkv.storage.codec import state_from_row, state_to_row
from quorumkv.storage.dir_lock import lock_data_dir
from quorumkv.storage.fsyncer import Fsyncer
from quorumkv.storage.memory import MemoryStorage
from quorumkv.storage.sqlite_import import import_sqlite, remove_sqlite

log = logging.getLogger(__name__)

LOG_NAME = "quorumkv.log"
MAGIC = b"QKVLOG1\n"  # first bytes of every log file: refuse what is not one
FRAME_HEAD = struct.Struct("<II")  # body length, crc32 of the body
BODY_START = b"\x92"  # msgpack: an array of two, (metadata, rows)
COMPACT_MIN_BYTES = 64 << 20
STATE_OVERHEAD = 48  # bytes of a snapshot row besides its key and value, about (ballots)
SNAPSHOT_FRAME_ROWS = 4096  # states per frame of a snapshot: bounds one frame's memory
PREALLOCATE_AHEAD = 4 << 20  # zeros kept ahead of the log's end; topped up at half of it
COMPACT_RETRY_SECONDS = 60.0


class LogError(StorageError):
    """The data directory holds something that is not a log this replica can start from."""


class Replay(NamedTuple):
    states: dict[str, AcceptorState]
    meta: dict[str, str]
    valid_bytes: int  # the log's length up to the end of its last whole frame
    total_bytes: int
    torn_bytes: int  # how far bytes other than zeros go past the last whole frame (no
    # whole frame among them)

    @property
    def torn(self) -> bool:
        return self.torn_bytes > 0


def encode_frame(states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> bytes:
    """One atomic batch. A state equal to `INITIAL` is recorded as a removal (no state)."""
    rows: list[tuple[str, Any, bytes | None]] = []
    for key, state in states.items():
        if state == INITIAL:
            rows.append((key, None, None))
        else:
            small, value = state_to_row(state)
            rows.append((key, small, value))
    body: bytes = msgpack.packb((dict(meta), rows))
    return FRAME_HEAD.pack(len(body), zlib.crc32(body)) + body


def replay(path: Path) -> Replay:
    """Every state and metadata value in the log at `path`, as the whole frames left them.

    Read-only: a torn last frame is reported through `torn` and `valid_bytes`, not removed;
    a log damaged before its end raises `LogError`.
    """
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise LogError(f"{path} is not a QuorumKV log (no {MAGIC!r} header)")
    states: dict[str, AcceptorState] = {}
    meta: dict[str, str] = {}
    view = memoryview(data)
    pos = len(MAGIC)
    while (end := _frame_end(view, pos)) is not None:
        frame_meta, rows = msgpack.unpackb(view[pos + FRAME_HEAD.size:end])
        meta.update(frame_meta)
        for key, small, value in rows:
            if small is None:
                states.pop(key, None)
            else:
                states[key] = state_from_row(small, value)
        pos = end
    torn_bytes = _end_of_data(data, pos) - pos
    whole = _whole_frame_after(data, pos) if torn_bytes else None
    if whole is not None:
        raise LogError(
            f"{path} is damaged: the frame at byte {pos} is broken (checksum or length) but a "
            f"whole one follows at byte {whole}, so this is no torn write, and cutting the "
            "log there would drop acknowledged commits. This replica cannot vouch for its "
            "data: remove it from the membership and add it back with an empty data "
            "directory (keep this one for inspection)")
    return Replay(states, meta, pos, len(data), torn_bytes)


def _end_of_data(data: bytes, start: int) -> int:
    """Where the bytes other than zeros end, at or after `start` (the zeros written ahead of
    the log follow them)."""
    end = len(data)
    while end > start:
        chunk = data[max(start, end - 65536):end]
        tail_zeros = len(chunk) - len(chunk.rstrip(b"\0"))
        if tail_zeros < len(chunk):
            return end - tail_zeros
        end -= len(chunk)
    return start


def _whole_frame_after(data: bytes, pos: int) -> int | None:
    """Where the whole frames that run to the log's end start after the broken one at
    `pos`, if they do anywhere.

    A whole frame alone is no proof: a broken (torn) last frame holds clients' values,
    which may hold a frame's bytes too (a backup of a log, say), and the replica would not
    restart. What is written after a damaged frame is a run of whole frames up to the
    zeros or the file's end. Every body is a msgpack pair, so only the places followed by
    its first byte are tried: a few checksums instead of one per byte.
    """
    view = memoryview(data)
    body = data.find(BODY_START, pos + FRAME_HEAD.size + 1)
    while body != -1:
        start = end = body - FRAME_HEAD.size
        while (after := _frame_end(view, end)) is not None:
            end = after
        if end > start and data.count(0, end) == len(data) - end:
            return start
        body = data.find(BODY_START, body + 1)
    return None


def _frame_end(view: memoryview, pos: int) -> int | None:
    """Where the frame at `pos` ends, if a whole one (complete, checksum right) is there."""
    if pos + FRAME_HEAD.size > len(view):
        return None
    length, crc = FRAME_HEAD.unpack_from(view, pos)
    body = pos + FRAME_HEAD.size
    if not 0 < length <= len(view) - body or zlib.crc32(view[body:body + length]) != crc:
        return None
    return body + int(length)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, frames: Iterable[bytes]) -> int:
    """A new log file at `path` holding `frames`, fdatasynced; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = len(MAGIC)
        write_all(fd, MAGIC)
        for frame in frames:
            write_all(fd, frame)
            size += len(frame)
        os.fdatasync(fd)
        return size
    finally:
        os.close(fd)


def snapshot_frames(states: Mapping[str, AcceptorState],
                    meta: Mapping[str, str]) -> Iterator[bytes]:
    """The live states and all metadata, as frames of a bounded size."""
    items = list(states.items())
    yield encode_frame({}, meta)
    for start in range(0, len(items), SNAPSHOT_FRAME_ROWS):
        yield encode_frame(dict(items[start:start + SNAPSHOT_FRAME_ROWS]), {})


def live_size(states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> int:
    """About how many bytes a snapshot of `states` and `meta` takes (what a compaction
    would leave), without encoding it: the keys and values, and a few dozen bytes each of
    ballots and framing."""
    size = len(MAGIC) + sum(len(k) + len(v) + 8 for k, v in meta.items())
    for key, state in states.items():
        value = state.register.value
        size += len(key) + (len(value) if value is not None else 0) + STATE_OVERHEAD
    return size


class LogStorage:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_data_dir(data_dir)  # held by the fsync child too
        self.path = data_dir / LOG_NAME
        self._temporary = data_dir / (LOG_NAME + ".next")
        self._temporary.unlink(missing_ok=True)  # a compaction a crash interrupted
        if not self.path.exists():
            states, meta = import_sqlite(data_dir)
            write_new(self._temporary, snapshot_frames(states, meta))
            os.rename(self._temporary, self.path)
            fsync_dir(data_dir)
        remove_sqlite(data_dir)  # converted: the log holds all of it
        found = replay(self.path)
        if found.torn:
            log.warning("log ends in a torn frame: cut (a commit a crash interrupted before "
                        "its fsync returned, so before it was acknowledged)",
                        extra={"path": str(self.path), "kept_bytes": found.valid_bytes,
                               "torn_bytes": found.torn_bytes})
        self._image = MemoryStorage(found.meta, found.states)  # the live states, for compaction
        self._fd = os.open(self.path, os.O_WRONLY)
        if found.torn:
            os.ftruncate(self._fd, found.valid_bytes)
            os.fdatasync(self._fd)
        os.lseek(self._fd, found.valid_bytes, os.SEEK_SET)
        self._size = found.valid_bytes
        self._allocated = found.valid_bytes if found.torn else found.total_bytes  # zeros after
        # how big the log was after its last rewrite is not known after a restart, so the
        # size of a rewrite now stands in for it: taking the log's own size let a log that
        # restarts interrupted grow without bound (412 MB for 30 MB of live data after 15
        # restarts), and taking the minimum let it reach 128 MiB whatever the live data,
        # past the size the README tells to provision for (both found by testing)
        self._compacted_size = min(found.valid_bytes, live_size(found.states, found.meta))
        self._retry_at = 0.0  # time.monotonic() before which a failed compaction waits
        self._fsyncer: Fsyncer | None = None  # started by the first `sync`, on the event loop
        self._compactor = ThreadPoolExecutor(1, thread_name_prefix="quorumkv-compact")
        self._compaction: Future[int] | None = None
        self._tail: list[bytes] = []  # frames appended since the compaction's snapshot

    def load(self) -> Iterator[tuple[str, AcceptorState]]:
        return self._image.load()

    def write(self, states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> None:
        self._image.write(states, meta)
        frame = encode_frame(states, meta)
        write_all(self._fd, frame)
        self._size += len(frame)
        if self._compaction is not None:
            self._tail.append(frame)
        elif self._compaction_due():
            self._start_compaction()

    async def sync(self) -> None:
        if self._fsyncer is None:
            self._fsyncer = Fsyncer(self.path, self._lock)
        await self._fsyncer.sync()
        if os.fstat(self._fd).st_nlink == 0:
            # durable in a file no restart will find: acknowledging it would claim a vote
            # the replica no longer has (found by testing: `rm -rf` of the data directory
            # went unnoticed, and writes were acknowledged on one real copy)
            raise LogError(f"{self.path} was deleted while the replica ran: what it commits "
                           "now is lost at its next start")
        if self._compaction is not None and self._compaction.done():
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(self._compactor, self._finish_compaction):
                self._fsyncer.reopen()
        if self._allocated - self._size < PREALLOCATE_AHEAD // 2:  # nothing writes meanwhile
            start = max(self._allocated, self._size)
            await self._fsyncer.zero(start, self._size + PREALLOCATE_AHEAD - start)
            self._allocated = self._size + PREALLOCATE_AHEAD

    def commit(self, states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> None:
        """`write` and `fdatasync` right here, for start-up bookkeeping outside the committer."""
        self.write(states, meta)
        os.fdatasync(self._fd)

    def get_meta(self, name: str) -> str | None:
        return self._image.get_meta(name)

    def close(self) -> None:
        """Waits for a compaction in progress; its result is dropped (the log is whole)."""
        if self._fsyncer is not None:
            self._fsyncer.close()
        if self._compaction is not None:
            self._compaction.exception()  # waits; a failure is of no consequence now
            self._temporary.unlink(missing_ok=True)
        self._compactor.shutdown(wait=True)
        os.close(self._fd)
        os.close(self._lock)

    def _compaction_due(self) -> bool:
        return (self._size >= COMPACT_MIN_BYTES and self._size >= 2 * self._compacted_size
                and time.monotonic() >= self._retry_at)

    def _start_compaction(self) -> None:
        """Snapshot the states of this batch and all before it; later frames go to the tail."""
        states, meta = dict(self._image.states), dict(self._image.meta)
        log.info("compacting the log", extra={"path": str(self.path), "bytes": self._size,
                                               "keys": len(states)})
        self._compaction = self._compactor.submit(self._write_snapshot, states, meta)

    def _write_snapshot(self, states: dict[str, AcceptorState], meta: dict[str, str]) -> int:
        """In the compaction thread: the snapshot, fdatasynced, under the temporary name."""
        return write_new(self._temporary, snapshot_frames(states, meta))

    def _finish_compaction(self) -> bool:
        """After a sync, in the compaction thread: append the tail to the snapshot and rename
        it over the log. True if it did, so the log is another file now.

        A failure before the rename leaves the current log in use (it is whole and durable)
        and is logged; the next attempt waits until the log has doubled again. After the
        rename the new file is the log: a failure to make the rename durable is fatal.
        """
        assert self._compaction is not None
        compaction, tail = self._compaction, self._tail
        self._compaction, self._tail = None, []
        try:
            size = compaction.result()
            fd = os.open(self._temporary, os.O_WRONLY)
            os.lseek(fd, size, os.SEEK_SET)
        except OSError as exc:
            self._compaction_failed(exc)
            return False
        try:
            for frame in tail:
                write_all(fd, frame)
                size += len(frame)
            os.fdatasync(fd)
            os.rename(self._temporary, self.path)
        except OSError as exc:
            os.close(fd)
            self._compaction_failed(exc)
            return False
        os.close(self._fd)
        self._fd = fd
        fsync_dir(self.path.parent)
        log.info("log compacted", extra={"path": str(self.path), "bytes_before": self._size,
                                          "bytes_after": size})
        self._size = self._compacted_size = self._allocated = size
        return True

    def _compaction_failed(self, exc: OSError) -> None:
        """The log stays as it is, and the next attempt waits a while. Not until the log has
        doubled again, as it once did: a disk too full for the snapshot (ENOSPC) then
        filled up with log, and the replica could never compact again."""
        self._temporary.unlink(missing_ok=True)
        self._retry_at = time.monotonic() + COMPACT_RETRY_SECONDS
        log.error("log compaction failed; the log stays as it is",
                  extra={"path": str(self.path), "error": str(exc),
                         "retry_in_seconds": COMPACT_RETRY_SECONDS})
