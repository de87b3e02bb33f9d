"""Unit tests of placement: which replica is the home, the proposer of every change."""

from __future__ import annotations

from quorumkv.placement import home_of, home_order


def test_the_home_is_first_in_the_order_and_the_order_does_not_depend_on_the_input() -> None:
    for voters in (["2", "0", "1"], {"0", "1", "2"}, ("1", "2", "0")):
        assert home_order(voters) == ["0", "1", "2"]
        assert home_of(voters) == "0"


def test_the_home_stays_put_when_a_statefulset_grows_or_shrinks() -> None:
    """Scaling a StatefulSet adds and removes its highest ordinals, which are a KVCluster's
    replica ids; replica `0` stays home, so the home's promises (which save its next
    prepare of each key) are never lost to a resize. Ids compare as strings: `10` sorts
    before `2`, never before `0`."""
    three = [str(i) for i in range(3)]
    eleven = [str(i) for i in range(11)]
    assert home_of(three) == home_of(eleven) == "0"
    assert home_order(eleven)[:3] == ["0", "1", "10"]
