"""Which replica is a key's home: rendezvous hashing over the voters' ids.

A key's home proposes all its changes (one proposer per key: no duels, and the promise of its
last accept saves the next prepare). Replicas forward a change they receive for another's key
to its home; a client that knows the members can send it there itself and save the cluster
that hop (`quorumkv.client.Client(route_keys=True)`). Pure and the same everywhere, so every
replica, and every client, that sees the same voters picks the same home.

The score is a cryptographic hash (BLAKE2b), not CRC-32: a CRC is linear, so for keys of one
length crc(a + key) XOR crc(b + key) is the same for every key and the voters' order is far
from random. With CRC-32, ids "0", "1", "2" made "0" the home of half of `key-00000000` …
`key-00009999` and the others a quarter each; BLAKE2b gives each a third (±2%).
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b


def _score(node: str, key: str) -> bytes:
    return blake2b(f"{node}\0{key}".encode(), digest_size=8).digest()


def rendezvous_order(key: str, voters: Iterable[str]) -> list[str]:
    """The voters by preference to be the key's home."""
    return sorted(voters, key=lambda node: _score(node, key), reverse=True)


def home_of(key: str, voters: Iterable[str]) -> str:
    """The key's home: first in its rendezvous order."""
    return max(voters, key=lambda node: _score(node, key))
