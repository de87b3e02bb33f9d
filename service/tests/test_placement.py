"""Unit tests of key placement: which replica is a key's home."""

from __future__ import annotations

from collections import Counter

import pytest
from quorumkv.placement import home_of, rendezvous_order


@pytest.mark.parametrize("voters", [("0", "1", "2"), ("qkv-0", "qkv-1", "qkv-2"),
                                    ("0", "1", "2", "3", "4")])
@pytest.mark.parametrize("key_format", ["key-{:08d}", "user:{}", "{}"])
def test_homes_are_balanced_over_the_voters(voters: tuple[str, ...], key_format: str) -> None:
    """Each replica is home to its share of similar keys: a home coordinates every change of
    its keys, so an unbalanced rule makes one replica the cluster's bottleneck (with CRC-32,
    "0" was home to half of `key-00000000` … `key-00009999`)."""
    homes = Counter(home_of(key_format.format(i), voters) for i in range(6000))
    share = 6000 / len(voters)
    assert set(homes) == set(voters)
    assert all(abs(count - share) < 0.1 * share for count in homes.values()), homes


def test_the_home_is_first_in_the_order_and_the_order_does_not_depend_on_the_input() -> None:
    for i in range(200):
        key = f"k{i}"
        order = rendezvous_order(key, ["2", "0", "1"])
        assert sorted(order) == ["0", "1", "2"]
        assert order == rendezvous_order(key, {"0", "1", "2"})
        assert home_of(key, ["1", "2", "0"]) == order[0]


def test_removing_a_voter_moves_only_its_keys() -> None:
    """Rendezvous hashing: when a replica leaves, only the keys it was home to move."""
    keys = [f"key-{i}" for i in range(3000)]
    before = {key: home_of(key, ("0", "1", "2", "3")) for key in keys}
    after = {key: home_of(key, ("0", "1", "2")) for key in keys}
    moved = {key for key in keys if before[key] != after[key]}
    assert moved == {key for key in keys if before[key] == "3"}
