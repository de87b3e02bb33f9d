"""Fixtures of the service's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from replicas import Replicas, running


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Replicas]:
    """Three real replicas on loopback, ready and caught up with each other."""
    with running(tmp_path) as replicas:
        yield replicas
