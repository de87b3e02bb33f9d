"""The storage contract.

Methods are blocking and called from one writer thread only (see `committer`), so an
implementation needs no locking of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from quorumkv.core.acceptor import AcceptorState


class Storage(Protocol):
    def load(self) -> Iterator[tuple[str, AcceptorState]]:
        """Every key's state, as last committed. Called once, at start, before any commit."""
        ...

    def commit(self, states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> None:
        """Write all of `states` and `meta` atomically.

        When this returns the batch is durable: it survives `kill -9` of the process and a
        power loss (fsync). If it raises, nothing of the batch may be assumed written.
        """
        ...

    def get_meta(self, name: str) -> str | None:
        """A metadata value (identity, boot counter, known peers) as last committed."""
        ...

    def close(self) -> None: ...
