"""Which replica proposes the cluster's changes: its home, the voter whose id sorts first.

One replica, the home, proposes every change while it answers: no duels between proposers
(accepts taken by some acceptors and refused by others leave writes indeterminate), the
promise of its last accept of a key saves the next prepare, and it batches the changes of
all keys into one accept message per peer and one commit. Replicas forward the changes they
receive to it; a client that knows the members can send its writes there itself and save
the cluster that hop (`quorumkv.client.Client(route_writes=True)`). While the home does not
answer, or is not settled yet (back from a pause or a restart: `Coordinator.acting_home`),
the next voter in `home_order` that does takes its place. Any replica can still
propose any change (Paxos needs no leader for safety); the home is a preference, not an
election, so there is no lease and no term to wait out.

Until 2026-11-27 each key had its own home (rendezvous hashing over the voters). On this
project's 2-core benchmark host, one home for all keys made writes 12-51% faster and 17-35%
cheaper in CPU per write (bench/README.md, thirteenth pass): one proposer's batches are three
times larger than three proposers' each, and the other replicas only forward and accept. The
price is etcd's: the home's one core bounds the cluster's write rate.

Pure and the same everywhere: every replica, and every client, that sees the same voters picks
the same home.
"""

from __future__ import annotations

from collections.abc import Iterable


def home_order(voters: Iterable[str]) -> list[str]:
    """The voters by preference to be the home: their ids in sorted order, so that the home
    stays put when replicas are added or removed (a KVCluster's ids are its pods' ordinals,
    and scaling adds or removes the highest: replica `0` is home for good)."""
    return sorted(voters)


def home_of(voters: Iterable[str]) -> str:
    """The home while every voter answers: first in `home_order`."""
    return min(voters)
