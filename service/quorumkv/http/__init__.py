"""The HTTP edge: the client API of SPEC.md and the peer endpoint under `/internal/`."""
