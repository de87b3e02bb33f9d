"""In-memory storage: for unit tests, the deliberately unsafe volatile mode, and the image of
the log's live states that `storage.log` keeps for its compactions.

`QUORUMKV_UNSAFE_VOLATILE=1` runs a replica on this storage so a restart comes back with
amnesia under its old identity; the linearizability test uses it to prove that its checker
catches lost writes. Never use it for data you want to keep.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from quorumkv.core.acceptor import INITIAL, AcceptorState


class MemoryStorage:
    def __init__(self, meta: Mapping[str, str] | None = None,
                 states: dict[str, AcceptorState] | None = None) -> None:
        self.states: dict[str, AcceptorState] = {} if states is None else states
        self.meta: dict[str, str] = dict(meta or {})
        self.commits = 0

    def load(self) -> Iterator[tuple[str, AcceptorState]]:
        yield from list(self.states.items())

    def write(self, states: Mapping[str, AcceptorState], meta: Mapping[str, str]) -> None:
        for key, state in states.items():
            if state == INITIAL:
                self.states.pop(key, None)
            else:
                self.states[key] = state
        self.meta.update(meta)

    async def sync(self) -> None:
        self.commits += 1

    def get_meta(self, name: str) -> str | None:
        return self.meta.get(name)

    def close(self) -> None:
        pass
