"""Data directories of the SQLite era (before 2026-11-26): read once, to convert them.

A replica that finds no log but an old `quorumkv.sqlite3` starts from its content — identity,
boot counter, configuration, promise floor and every key's state — so upgrading the image of
a running cluster keeps each replica's data and identity. Once the log holding it is durable,
the SQLite files are removed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

from quorumkv.core.acceptor import AcceptorState
from quorumkv.storage.codec import state_from_row

SQLITE_NAME = "quorumkv.sqlite3"


def import_sqlite(data_dir: Path) -> tuple[dict[str, AcceptorState], dict[str, str]]:
    """The states and metadata of the SQLite database in `data_dir`, or nothing if none."""
    path = data_dir / SQLITE_NAME
    if not path.exists():
        return {}, {}
    db = sqlite3.connect(path)  # applies a WAL left by a crash, as SQLite always did
    try:
        meta = {str(name): str(value) for name, value in db.execute("SELECT name, value FROM meta")}
        states = {str(key): state_from_row(msgpack.unpackb(small), value)
                  for key, small, value in db.execute("SELECT key, state, value FROM registers")}
    finally:
        db.close()
    return states, meta


def remove_sqlite(data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (data_dir / (SQLITE_NAME + suffix)).unlink(missing_ok=True)
