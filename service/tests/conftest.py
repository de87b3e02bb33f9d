"""Fixtures of the service's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from replicas import Replicas


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Replicas]:
    """Three real replicas on loopback, ready and caught up with each other."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        replicas.wait_synced()
        yield replicas
    finally:
        replicas.stop_all()
