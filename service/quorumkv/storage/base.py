"""The storage contract.

Calls never overlap (the group committer orders them), so an implementation needs no
locking of its own. Both `write` and `sync` run on the event loop: `write` must be cheap
(hand the batch to the OS), and `sync` must wait for the disk without blocking the loop
(the log has a child process fsync, `storage/fsyncer.py`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from quorumkv.core.acceptor import AcceptorState


class StorageError(Exception):
    """The data directory holds, or is in, a state this replica must not start from."""


class Storage(Protocol):
    def load(self) -> Iterator[tuple[str, AcceptorState]]:
        """Every key's state, as last committed. Called once, at start, before any commit."""
        ...

    def write(self, states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> None:
        """Stage all of `states` and `meta` as one atomic batch; nothing is durable yet.

        A key whose state is `INITIAL` (nothing promised or accepted) is removed.
        """
        ...

    async def sync(self) -> None:
        """Make the batch staged by `write` durable, atomically.

        When this returns the batch survives `kill -9` of the process and a power loss
        (fsync). If it raises, nothing of the batch may be assumed written.
        """
        ...

    def get_meta(self, name: str) -> str | None:
        """A metadata value (identity, boot counter, known peers) as last committed."""
        ...

    def close(self) -> None: ...
