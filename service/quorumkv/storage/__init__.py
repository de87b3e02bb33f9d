"""Durable state of a replica: every key's acceptor state, plus a little metadata."""
