"""Which replica is a key's home: rendezvous hashing over the voters' ids.

A key's home proposes all its changes (one proposer per key: no duels, and the promise of its
last accept saves the next prepare). Replicas forward a change they receive for another's key
to its home; a client that knows the members can send it there itself and save the cluster
that hop (`quorumkv.client.Client(route_keys=True)`). Pure and the same everywhere, so every
replica, and every client, that sees the same voters picks the same home.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable


def rendezvous_order(key: str, voters: Iterable[str]) -> list[str]:
    """The voters by preference to be the key's home."""
    return sorted(voters, key=lambda node: zlib.crc32(f"{node}\0{key}".encode()), reverse=True)


def home_of(key: str, voters: Iterable[str]) -> str:
    """The key's home: first in its rendezvous order."""
    return rendezvous_order(key, voters)[0]
