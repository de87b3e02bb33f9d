"""Order-independent digests of key ranges, kept up to date incrementally for anti-entropy.

Keys fall into a fixed number of buckets; a bucket's digest is the XOR of a 64-bit hash of
each `(key, version)` in it, so updating one key costs two hashes, and two replicas with the
same data have the same digests whatever order they applied it in.
"""

from __future__ import annotations

import hashlib
import zlib

from quorumkv.core.ballot import Ballot
from quorumkv.core.register import format_etag

BUCKETS = 256


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


def entry_hash(key: str, version: Ballot | None) -> int:
    if version is None:
        return 0
    material = key.encode() + b"\0" + format_etag(version).encode()
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")


class Digests:
    def __init__(self) -> None:
        self.buckets = [0] * BUCKETS

    def update(self, key: str, old: Ballot | None, new: Ballot | None) -> None:
        if old == new:
            return
        bucket = bucket_of(key)
        self.buckets[bucket] ^= entry_hash(key, old) ^ entry_hash(key, new)
