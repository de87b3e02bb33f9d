"""The value of one key's register, as agreed by Paxos.

`version` is the ballot of the proposal that applied the user's change. Identity changes
(reads that write back, anti-entropy repair, membership rescans) keep it, so the ETag a client
sees changes only when the data changes, and compare-and-set works on it.
"""

from __future__ import annotations

from typing import NamedTuple

from quorumkv.core.ballot import Ballot


class Register(NamedTuple):
    value: bytes | None  # None: absent or deleted (a tombstone once version is set)
    version: Ballot | None  # None: never written

    @property
    def exists(self) -> bool:
        return self.value is not None

    @property
    def etag(self) -> str | None:
        """The HTTP entity tag, quoted as RFC 9110 wants it."""
        if self.version is None:
            return None
        return format_etag(self.version)


EMPTY = Register(None, None)


def format_etag(version: Ballot) -> str:
    return f'"{version.counter}.{version.boot}.{version.node}"'


def etag_matches(header: str, register: Register) -> bool:
    """Whether an `If-Match` header value matches the register (`*` = any existing value).

    A weak tag (`W/"…"`) never matches: compare-and-set needs strong comparison.
    """
    return etag_listed(header, register.etag if register.exists else None)


def etag_listed(header: str, current: str | None, *, weak: bool = False) -> bool:
    """Whether a comma-separated list of entity tags (or `*`) names `current`, the ETag of
    the value there is (None: no value). Weak comparison (RFC 9110, 8.8.3.2) is
    `If-None-Match`'s: `W/"x"` names `"x"` too."""
    if current is None:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if weak:
            candidate = candidate.removeprefix("W/")
        if candidate == "*" or candidate == current:
            return True
    return False
