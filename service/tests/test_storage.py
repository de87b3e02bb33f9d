"""The log storage and the group committer over real files: what is durable when, how it
batches, what a restart finds after a torn write, compaction and an upgrade from SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from quorumkv.core.acceptor import INITIAL, AcceptorState
from quorumkv.core.ballot import Ballot
from quorumkv.core.register import Register
from quorumkv.storage import fsyncer
from quorumkv.storage import log as log_storage
from quorumkv.storage.committer import GroupCommitter
from quorumkv.storage.dir_lock import LOCK_NAME, DataDirInUse, lock_data_dir
from quorumkv.storage.fsyncer import FsyncProcessError
from quorumkv.storage.log import LOG_NAME, LogError, LogStorage


def state(counter: int, value: bytes) -> AcceptorState:
    ballot = Ballot(counter, "0", 1)
    return AcceptorState(ballot, ballot, Register(value, ballot))


async def test_a_staged_state_is_on_disk_once_its_future_resolves(tmp_path: Path) -> None:
    storage = LogStorage(tmp_path)
    committer = GroupCommitter(storage)
    durable = committer.stage("k", state(1, b"v1"))
    assert committer.durable("k") is durable
    await durable
    assert committer.durable("k") is None
    reopened = log_storage.replay(tmp_path / LOG_NAME).states  # what a restart would see
    assert reopened == {"k": state(1, b"v1")}
    await committer.close()


async def test_what_arrives_during_a_commit_shares_the_next_one(tmp_path: Path) -> None:
    sizes: list[int] = []
    committer = GroupCommitter(LogStorage(tmp_path), lambda size, _: sizes.append(size))
    first = committer.stage("a", state(1, b"a"))
    await asyncio.sleep(0)  # the first commit starts with "a" alone
    rest = [committer.stage(f"k{i}", state(1, b"x")) for i in range(50)]
    assert len({id(f) for f in rest}) == 1  # one future: one commit for all fifty
    await asyncio.gather(first, *rest)
    assert sizes == [1, 50]
    await committer.close()


def fsync_child(storage: LogStorage) -> int:
    assert storage._fsyncer is not None
    return storage._fsyncer.pid


def logs_held(pid: int, path: Path) -> set[int]:
    """The inodes of the files at `path` (or once there) that process `pid` has open."""
    return {os.stat(fd).st_ino for fd in Path(f"/proc/{pid}/fd").iterdir()
            if os.readlink(fd).startswith(str(path))}


async def test_the_loop_keeps_running_while_the_disk_is_slow(tmp_path: Path) -> None:
    """A stopped fsync process stands for a disk that takes its time: commits wait, the event
    loop (heartbeats, reads, other replies) does not."""
    storage = LogStorage(tmp_path)
    committer = GroupCommitter(storage)
    await committer.stage("warm", state(1, b"w"))  # starts the fsync process
    child = fsync_child(storage)
    os.kill(child, signal.SIGSTOP)
    try:
        slow = committer.stage("slow", state(1, b"s"))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 20 and not slow.done()
    finally:
        os.kill(child, signal.SIGCONT)
    await slow
    assert log_storage.replay(tmp_path / LOG_NAME).states["slow"] == state(1, b"s")
    await committer.close()


async def test_a_commit_the_disk_never_answers_shows_its_age_and_does_not_block_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopped fsync process stands for a disk that hangs: the commit's age is what shows
    it (readiness uses it), and the replica must still be able to stop."""
    monkeypatch.setattr(fsyncer, "CLOSE_TIMEOUT", 0.5)
    committer = GroupCommitter(storage := LogStorage(tmp_path))
    await committer.stage("warm", state(1, b"w"))
    assert committer.commit_age() == 0.0
    child = fsync_child(storage)
    os.kill(child, signal.SIGSTOP)
    try:
        stuck = committer.stage("stuck", state(1, b"s"))
        await asyncio.sleep(0.3)
        assert not stuck.done() and committer.commit_age() >= 0.3
        started = time.monotonic()
        await committer.close(timeout=0.2)
        assert time.monotonic() - started < 5
        assert not Path(f"/proc/{child}").exists(), "the stopped fsync process was left behind"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)


async def test_the_fsync_process_never_preempts_its_replica(tmp_path: Path) -> None:
    """It runs under SCHED_BATCH: a commit command wakes it without taking the CPU from the
    replica that wrote it (bench/README.md, "Seventh pass")."""
    committer = GroupCommitter(storage := LogStorage(tmp_path))
    await committer.stage("a", state(1, b"a"))
    assert os.sched_getscheduler(fsync_child(storage)) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the replica's own policy is untouched
    await committer.close()


async def test_a_dead_fsync_process_fails_the_commit_and_every_later_one(tmp_path: Path) -> None:
    committer = GroupCommitter(storage := LogStorage(tmp_path))
    await committer.stage("a", state(1, b"a"))
    os.kill(fsync_child(storage), signal.SIGKILL)
    with pytest.raises(FsyncProcessError):
        await committer.stage("b", state(1, b"b"))
    assert isinstance(committer.failure, FsyncProcessError)
    with pytest.raises(RuntimeError, match="storage failed earlier"):
        committer.stage("c", state(1, b"c"))
    await committer.close()


async def test_the_fsync_process_ends_with_the_storage(tmp_path: Path) -> None:
    committer = GroupCommitter(storage := LogStorage(tmp_path))
    await committer.stage("a", state(1, b"a"))
    child = fsync_child(storage)
    await committer.close()
    for _ in range(200):
        if not Path(f"/proc/{child}").exists():
            break
        await asyncio.sleep(0.01)
    assert not Path(f"/proc/{child}").exists(), "the fsync process outlived its storage"


def test_a_second_replica_on_the_data_directory_is_refused(tmp_path: Path) -> None:
    storage = LogStorage(tmp_path)
    with pytest.raises(DataDirInUse, match="in use by another process"):
        lock_data_dir(tmp_path, wait=0.2)
    storage.close()
    os.close(lock_data_dir(tmp_path, wait=0.2))  # free once the first has stopped


async def test_the_fsync_process_holds_the_directory_until_it_exits(tmp_path: Path) -> None:
    """A `kill -9` of the replica leaves its fsync child to finish (it may be writing zeros
    ahead of the log's end): no new replica may start on the directory until it has."""
    storage = LogStorage(tmp_path)
    await commit(storage, {"a": state(1, b"a")}, {})
    assert storage._fsyncer is not None
    os.close(storage._lock)  # the replica's own descriptors, as its death would close them
    os.close(storage._fd)
    with pytest.raises(DataDirInUse):
        lock_data_dir(tmp_path, wait=0.2)
    storage._fsyncer.close()  # its input closes: the child exits
    os.close(lock_data_dir(tmp_path, wait=5))


def log_size(path: Path) -> int:
    return log_storage.replay(path / LOG_NAME).valid_bytes  # the zeros after it aside


async def commit(storage: LogStorage, states: dict[str, AcceptorState],
                 meta: dict[str, str]) -> None:
    """One commit as the group committer makes it."""
    storage.write(states, meta)
    await storage.sync()


def reopened(path: Path) -> tuple[dict[str, AcceptorState], LogStorage]:
    """What a restart finds (the caller closes the storage)."""
    storage = LogStorage(path)
    return dict(storage.load()), storage


def test_states_meta_and_removals_survive_a_restart(tmp_path: Path) -> None:
    storage = LogStorage(tmp_path)
    fast = state(3, b"f")._replace(fast=frozenset({"0", "1", "2"}))  # a create's fast vote
    storage.commit({"a": state(1, b"a"), "b": state(1, b"b")}, {"boot": "1"})
    storage.commit({"a": state(2, b"a2"), "b": INITIAL, "f": fast}, {"boot": "2", "floor": "7"})
    storage.close()
    states, storage = reopened(tmp_path)
    assert states == {"a": state(2, b"a2"), "f": fast}
    assert storage.get_meta("boot") == "2" and storage.get_meta("floor") == "7"
    storage.close()


@pytest.mark.parametrize("damage", [
    pytest.param(lambda frame: frame[:len(frame) // 2], id="half a frame"),
    pytest.param(lambda frame: frame[:5], id="part of a header"),
    pytest.param(lambda frame: frame[:-1] + bytes([frame[-1] ^ 1]), id="a flipped bit"),
])
def test_a_torn_last_frame_is_cut_and_writing_goes_on_after_it(
    tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    storage = LogStorage(tmp_path)
    storage.commit({"a": state(1, b"a")}, {})
    storage.close()
    whole = (tmp_path / LOG_NAME).stat().st_size
    torn = damage(log_storage.encode_frame({"b": state(1, b"b")}, {}))  # type: ignore[operator]
    with open(tmp_path / LOG_NAME, "ab") as f:  # a commit a crash interrupted
        f.write(torn)
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a")}
    assert (tmp_path / LOG_NAME).stat().st_size == whole
    assert [r.torn_bytes for r in caplog.records if "torn frame" in r.msg] == [len(torn)]
    storage.commit({"c": state(1, b"c")}, {})
    storage.close()
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a"), "c": state(1, b"c")}
    storage.close()


async def run_replica_committing(path: Path, key: str, value: AcceptorState) -> None:
    """A replica's life in short: start, commit one state as under load, stop."""
    committer = GroupCommitter(LogStorage(path))
    await committer.stage(key, value)
    await committer.close()


async def test_frames_are_written_over_zeros_and_a_restart_goes_on_after_the_last(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run_replica_committing(tmp_path, "a", state(1, b"a"))
    found = log_storage.replay(tmp_path / LOG_NAME)
    assert found.total_bytes >= found.valid_bytes + log_storage.PREALLOCATE_AHEAD // 2
    assert not found.torn
    await run_replica_committing(tmp_path, "b", state(1, b"b"))  # after "a", not the zeros
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a"), "b": state(1, b"b")}
    assert not [r for r in caplog.records if "torn" in r.msg]
    storage.close()


async def test_a_torn_frame_over_the_zeros_is_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run_replica_committing(tmp_path, "a", state(1, b"a"))
    end = log_size(tmp_path)
    frame = log_storage.encode_frame({"b": state(1, b"b")}, {})
    with open(tmp_path / LOG_NAME, "r+b") as f:  # its first bytes never reached the disk
        f.seek(end + 8)
        f.write(frame[8:])
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a")}
    assert [r for r in caplog.records if "torn frame" in r.msg]
    assert (tmp_path / LOG_NAME).stat().st_size == end
    storage.commit({"c": state(1, b"c")}, {})
    storage.close()
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a"), "c": state(1, b"c")}
    storage.close()


@pytest.mark.parametrize("where", ["body", "length"])
async def test_damage_before_the_end_is_refused_not_cut(tmp_path: Path, where: str) -> None:
    """A broken frame with whole ones after it is no torn write: cutting there dropped every
    later commit, acknowledged ones included (found by exploratory testing)."""
    for i in range(5):
        await run_replica_committing(tmp_path, f"k{i}", state(1, b"v%d" % i))
    path = tmp_path / LOG_NAME
    data = bytearray(path.read_bytes())
    second = len(log_storage.MAGIC) + 8 + int.from_bytes(data[8:12], "little")  # frame 2
    data[second + (12 if where == "body" else 1)] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(LogError, match="is damaged"):
        LogStorage(tmp_path)
    assert path.read_bytes() == bytes(data)  # left as found, for inspection


def test_a_torn_frame_holding_a_frame_in_a_value_is_still_torn(tmp_path: Path) -> None:
    """A client's value may hold a frame's bytes (a backup of a log, say): inside a torn
    last frame they are no sign of damage (found by adversarial testing: exit 3)."""
    storage = LogStorage(tmp_path)
    storage.commit({"a": state(1, b"a")}, {})
    storage.close()
    inner = log_storage.encode_frame({}, {})
    frame = log_storage.encode_frame({"b": state(1, b"x" * 5000 + inner + b"y" * 5000)}, {})
    with open(tmp_path / LOG_NAME, "ab") as f:  # torn after the frame in the value
        f.write(frame[:-3000])
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a")}
    storage.close()


def test_a_file_that_is_not_a_log_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(b"something else entirely")
    with pytest.raises(LogError, match="not a QuorumKV log"):
        LogStorage(tmp_path)
    assert (tmp_path / LOG_NAME).read_bytes() == b"something else entirely"


async def test_compaction_keeps_live_states_and_shrinks_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_storage, "COMPACT_MIN_BYTES", 64 << 10)
    storage = LogStorage(tmp_path)
    expected: dict[str, AcceptorState] = {}
    for counter in range(1, 400):  # ten keys overwritten again and again, one deleted
        batch = {f"k{i}": state(counter, b"x" * 100) for i in range(10)}
        batch["k9"] = INITIAL if counter % 2 else state(counter, b"x")
        await commit(storage, batch, {"boot": str(counter)})
        expected.update(batch)
    storage.close()
    expected.pop("k9")
    size = log_size(tmp_path)
    assert size < 4 * (64 << 10), size  # without compaction: 400 frames of ~1.2 KB
    assert not (tmp_path / (LOG_NAME + ".next")).exists()
    states, storage = reopened(tmp_path)
    assert states == expected
    assert storage.get_meta("boot") == "399"
    storage.close()


async def test_restarts_do_not_let_the_log_grow_without_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each start took the log's size as the size after the last rewrite, so a replica
    restarted often never compacted (found by adversarial testing: 412 MB for 30 MB)."""
    monkeypatch.setattr(log_storage, "COMPACT_MIN_BYTES", 16 << 10)
    for run in range(48):  # ten keys overwritten, a restart between every 10 commits
        storage = LogStorage(tmp_path)
        for counter in range(10):
            await commit(storage, {f"k{i}": state(run * 10 + counter + 1, b"x" * 100)
                                   for i in range(10)}, {})
        storage.close()
    size = log_size(tmp_path)
    assert size < 4 * (16 << 10), size  # 480 frames of ~1.2 KB without compaction


async def overwrite(storage: LogStorage, commits: int, start: int = 0) -> int:
    """Overwrite ten keys, ~1.25 KB of log a commit; returns the ballot counter reached."""
    for counter in range(start + 1, start + commits + 1):
        await commit(storage, {f"k{i}": state(counter, b"x" * 100) for i in range(10)}, {})
        await asyncio.sleep(0.05)  # a compaction's snapshot is written meanwhile
    return start + commits


async def test_after_a_restart_the_log_is_compacted_at_twice_its_live_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart took the smaller of the log's size and the minimum as the size after the
    last rewrite (found by testing: restarted at 60 MB with 25 MiB live, the log reached
    128 MiB before its next compaction and filled a disk sized by the README)."""
    monkeypatch.setattr(log_storage, "COMPACT_MIN_BYTES", 16 << 10)
    counter = await overwrite(storage := LogStorage(tmp_path), 12)
    storage.close()
    assert 14 << 10 < log_size(tmp_path) < 16 << 10
    await overwrite(storage := LogStorage(tmp_path), 8, counter)  # live: ~1.5 KB
    storage.close()
    assert log_size(tmp_path) < 16 << 10  # 25 KB without a compaction


async def test_a_failed_compaction_is_tried_again_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only once the log has doubled again (found by testing: a disk too full for the
    snapshot then filled up with log)."""
    monkeypatch.setattr(log_storage, "COMPACT_MIN_BYTES", 16 << 10)
    monkeypatch.setattr(log_storage, "COMPACT_RETRY_SECONDS", 0.1)
    failures = [OSError(errno.ENOSPC, "No space left on device")]
    snapshot = LogStorage._write_snapshot

    def full_disk_once(self: LogStorage, *args: Any) -> int:
        if failures:
            raise failures.pop()
        return snapshot(self, *args)

    monkeypatch.setattr(LogStorage, "_write_snapshot", full_disk_once)
    await overwrite(storage := LogStorage(tmp_path), 20)
    storage.close()
    assert not failures, "no compaction was tried"
    assert log_size(tmp_path) < 16 << 10  # 25 KB without a second attempt


async def test_a_log_deleted_under_the_replica_fails_the_next_commit(tmp_path: Path) -> None:
    """Its commits would be durable in a file no restart finds (found by testing: after
    `rm -rf` of the data directory the replica stayed ready and voted)."""
    committer = GroupCommitter(LogStorage(tmp_path))
    await committer.stage("a", state(1, b"a"))
    (tmp_path / LOG_NAME).unlink()
    with pytest.raises(LogError, match="deleted"):
        await committer.stage("b", state(1, b"b"))
    assert isinstance(committer.failure, LogError)
    await committer.close()


async def test_commits_made_while_a_compaction_runs_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_storage, "COMPACT_MIN_BYTES", 16 << 10)
    release = threading.Event()
    snapshot = LogStorage._write_snapshot

    def slow_snapshot(self: LogStorage, *args: object) -> int:
        release.wait(10)
        return snapshot(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LogStorage, "_write_snapshot", slow_snapshot)
    storage = LogStorage(tmp_path)
    counter = 0
    while storage._compaction is None:  # fill until a compaction starts
        counter += 1
        await commit(storage, {"hot": state(counter, b"y" * 200)}, {})
    for i in range(50):  # while it runs
        await commit(storage, {f"new{i}": state(1, b"n")}, {})
    release.set()
    storage._compaction.result()
    await commit(storage, {"last": state(1, b"l")}, {})  # this sync installs the compacted log
    assert storage._compaction is None
    await commit(storage, {"after": state(1, b"a")}, {})  # appended to the new log
    # and that commit's fsync was of the new file, not of the one renamed away
    assert logs_held(fsync_child(storage), storage.path) == {os.stat(storage.path).st_ino}
    storage.close()
    states, storage = reopened(tmp_path)
    assert states == {"hot": state(counter, b"y" * 200), "last": state(1, b"l"),
                      "after": state(1, b"a"), **{f"new{i}": state(1, b"n") for i in range(50)}}
    storage.close()


def test_a_left_over_compaction_file_is_removed_at_start(tmp_path: Path) -> None:
    storage = LogStorage(tmp_path)
    storage.commit({"a": state(1, b"a")}, {})
    storage.close()
    (tmp_path / (LOG_NAME + ".next")).write_bytes(b"half a snapshot")  # crash mid-compaction
    states, storage = reopened(tmp_path)
    assert states == {"a": state(1, b"a")}
    assert not (tmp_path / (LOG_NAME + ".next")).exists()
    storage.close()


def test_a_data_directory_of_the_sqlite_era_is_converted(tmp_path: Path) -> None:
    """The schema and row format the replica used before the log, written as it wrote them."""
    with sqlite3.connect(tmp_path / "quorumkv.sqlite3") as db:
        db.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE registers (key TEXT PRIMARY KEY, state BLOB NOT NULL, value BLOB)
                WITHOUT ROWID;
        """)
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("incarnation", "abc"), ("boot", "4")])
        ballot = [3, "1", 2]
        db.executemany("INSERT INTO registers VALUES (?, ?, ?)", [
            ("live", msgpack.packb([ballot, ballot, ballot]), b"value"),
            ("deleted", msgpack.packb([ballot, ballot, ballot]), None),
        ])
    states, storage = reopened(tmp_path)
    b = Ballot(3, "1", 2)
    assert states == {"live": AcceptorState(b, b, Register(b"value", b)),
                      "deleted": AcceptorState(b, b, Register(None, b))}
    assert storage.get_meta("incarnation") == "abc" and storage.get_meta("boot") == "4"
    storage.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, LOG_NAME]
