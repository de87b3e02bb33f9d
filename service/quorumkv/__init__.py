"""QuorumKV: a replicated key-value service with linearizable single-key operations.

Every replica can coordinate any request; each key is its own single-decree Paxos register
(CASPaxos), so there is no leader to elect and compare-and-set costs as much as a put.
"""

__version__ = "0.1.0"
