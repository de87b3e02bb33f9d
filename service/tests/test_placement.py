"""Unit tests of placement: which replica is the home, the proposer of every change."""

from __future__ import annotations

from quorumkv.placement import home_of, home_order


def test_the_home_is_first_in_the_order_and_the_order_does_not_depend_on_the_input() -> None:
    for voters in (["2", "0", "1"], {"0", "1", "2"}, ("1", "2", "0")):
        assert home_order(voters) == ["0", "1", "2"]
        assert home_of(voters) == "0"


def test_the_home_stays_put_when_a_statefulset_grows_or_shrinks() -> None:
    """Scaling a StatefulSet adds and removes its highest ordinals; its `name-0` stays home,
    so the home's promises (which save its next prepare of each key) are never lost to a
    resize. Ids compare as strings: `qkv-10` sorts before `qkv-2`, never before `qkv-0`."""
    three = [f"qkv-{i}" for i in range(3)]
    eleven = [f"qkv-{i}" for i in range(11)]
    assert home_of(three) == home_of(eleven) == "qkv-0"
    assert home_order(eleven)[:3] == ["qkv-0", "qkv-1", "qkv-10"]
