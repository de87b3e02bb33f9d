"""Replication: the local acceptor, the peer transport, the coordinator, anti-entropy."""
