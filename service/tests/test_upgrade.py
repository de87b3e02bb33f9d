"""A rolling upgrade, as a StatefulSet makes one: replicas of the previous release, replaced
one at a time (highest ordinal first) by this one on the same data directories, while
clients keep writing through every replica.

The previous release is the last revision of peer protocol 3 (PREVIOUS), exported from this
repository's history; this one speaks protocol 4, whose answers say whether their sender is
settled and ready. A peer that does not say counts as both: were it counted as neither, the
upgraded replicas would take the home from the old replica 0 while it still proposes (two
proposers: indeterminate `503`s), and the upgrade would not be seamless.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from quorumkv.client import Client, GetResult
from replicas import Replicas

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# The last revision of peer protocol 3 (conditional GETs; the next one made protocol 4).
PREVIOUS = "04b94eb33aeaca84242cf1694a3beabfe6350529"


def export_previous(to: Path) -> Path:
    """The previous release's `service/` directory, from git; skipped without the history
    (a source tarball): CI runs from a clone."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS, "service"],
                                 capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git history to export the previous release from: {exc}")
    to.mkdir()
    subprocess.run(["tar", "-x", "-C", str(to)], input=archive, check=True, timeout=60)
    return to / "service"


class Upgrading(Replicas):
    """Replicas that run the previous release until `upgrade` restarts them on this one."""

    def __init__(self, root: Path, previous: Path) -> None:
        super().__init__(root, 3)
        self.previous = previous
        self.upgraded: set[str] = set()

    def env_for(self, node: str) -> dict[str, str]:
        if node in self.upgraded:
            return self.env
        return {**self.env, "PYTHONPATH": str(self.previous)}

    def upgrade(self, node: str) -> None:
        self.stop(node)
        self.upgraded.add(node)
        self.start(node)
        self.wait_ready([node])


def cluster_view(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/cluster", timeout=5) as resp:
        view: dict[str, Any] = json.load(resp)
    return view


async def test_a_rolling_upgrade_from_the_previous_peer_protocol_keeps_serving(
        tmp_path: Path) -> None:
    previous = export_previous(tmp_path / "previous")
    data = tmp_path / "data"
    data.mkdir()
    replicas = Upgrading(data, previous)
    written: dict[str, GetResult] = {}
    steps = [0]

    async def write_and_check(tag: str) -> None:
        """Through every replica: a new key, and a compare-and-set of a shared key that
        the step before wrote through another replica; then every key written so far, read
        back through every replica."""
        urls = list(replicas.urls.values())
        steps[0] += 1
        for i, url in enumerate(urls):
            async with Client(url, timeout=10) as client:
                key = f"{tag}/{i}"
                put = await client.put(key, key.encode())
                written[key] = GetResult(key.encode(), put.etag)
                shared = f"shared/{(i + steps[0]) % len(urls)}"
                held = written.get(shared)
                value = f"{shared} {tag}".encode()
                put = await client.put(shared, value,
                                       if_match=held.etag if held else None,
                                       create_only=held is None)
                written[shared] = GetResult(value, put.etag)
        for url in urls:
            async with Client(url, timeout=10) as client:
                for key, expected in written.items():
                    assert await client.get(key) == expected, (url, key)

    try:
        replicas.start_all()
        replicas.wait_synced()
        for url in replicas.urls.values():  # the previous release runs: it shows no home
            assert "home" not in cluster_view(url)
        await write_and_check("previous")
        for node in ("2", "1", "0"):
            replicas.upgrade(node)
            for upgraded in replicas.upgraded:
                view = cluster_view(replicas.urls[upgraded])
                # a peer of the previous release counts as settled, so the upgraded
                # replicas send their writes where the old ones do: to 0, until it is
                # upgraded itself (restarted, it is not the home until it settles)
                old = set(replicas.urls) - replicas.upgraded
                assert all(m["settled"] for m in view["members"] if m["id"] in old), view
                if "0" in old:
                    assert view["home"] == "0", view
            await write_and_check(f"after-{node}")
        replicas.wait_synced()
        await write_and_check("upgraded")
    finally:
        replicas.stop_all()
