"""The membership-change resolver: every step decided from where the cluster is."""

from __future__ import annotations

import asyncio

import pytest
from quorumkv.core import reconfig
from quorumkv.core.quorum import Config, founding_id, make_config
from quorumkv.replication.membership import Membership

URLS = {str(i): f"http://n{i}" for i in range(6)}
A = make_config(1, ["0", "1", "2"], None, URLS)
B = {n: URLS[n] for n in ["0", "1", "2", "3", "4"]}


def test_grow_installs_joint_then_rescans_then_installs_new_set() -> None:
    step = reconfig.next_step(A, B, rescanned=False)
    assert isinstance(step, reconfig.Install)
    joint = step.config
    assert joint.epoch == 2 and joint.members == A.members and joint.joining == frozenset(B)
    assert joint.url_map()["4"] == "http://n4"
    assert reconfig.next_step(joint, B, rescanned=False) == reconfig.Rescan()
    final = reconfig.next_step(joint, B, rescanned=True)
    assert isinstance(final, reconfig.Install)
    assert final.config.epoch == 3 and final.config.members == frozenset(B)
    assert not final.config.is_joint
    assert reconfig.next_step(final.config, B, rescanned=False) == reconfig.Done(final.config)


def test_resume_after_a_crash_in_joint_rescans_again() -> None:
    joint = make_config(7, ["0", "1", "2"], B, URLS)
    assert reconfig.next_step(joint, B, rescanned=False) == reconfig.Rescan()


def test_one_change_at_a_time() -> None:
    joint = make_config(2, ["0", "1", "2"], B, URLS)
    step = reconfig.next_step(joint, {"0": URLS["0"]}, rescanned=False)
    assert isinstance(step, reconfig.Refused) and "in progress" in step.reason


def test_installing_quorum_covers_both_sides() -> None:
    joint = make_config(2, ["0", "1", "2"], B, URLS)
    final = make_config(3, B, None, URLS)
    assert reconfig.installing_quorum(joint, A) == joint
    assert reconfig.installing_quorum(final, joint) == joint
    assert not joint.is_quorum({"0", "1"})  # old majority alone is not enough
    assert joint.is_quorum({"0", "1", "3"})


def test_config_json_round_trip_and_strictness() -> None:
    joint = make_config(2, ["0", "1", "2"], B, URLS)
    assert Config.from_json(joint.to_json()) == joint
    assert not Config.from_json({"epoch": 0, "members": ["0"], "urls": {"0": "u"}}).initialized
    for bad in (None, {"epoch": -1, "members": ["0"], "urls": {"0": "u"}},
                {"epoch": 1, "members": ["0"], "urls": {}},
                {"epoch": 1, "members": [], "urls": {}},
                {"epoch": 1, "members": ["0"], "urls": {"0": "u"}, "joined": {"0": "2"}}):
        try:
            Config.from_json(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_configurations_record_when_each_voter_was_added() -> None:
    """So that a node added back while it was down (it never saw its removal) can tell."""
    grow = reconfig.next_step(A, B, rescanned=False)
    assert isinstance(grow, reconfig.Install)
    assert grow.config.joined_map() == {"3": 2, "4": 2}
    final = reconfig.next_step(grow.config, B, rescanned=True)
    assert isinstance(final, reconfig.Install) and final.config.joined_map() == {"3": 2, "4": 2}
    assert final.config.joined_at("4") == 2 and final.config.joined_at("0") == 0
    shrink = reconfig.next_step(final.config, {n: URLS[n] for n in "0123"}, rescanned=False)
    assert isinstance(shrink, reconfig.Install)
    smaller = reconfig.next_step(shrink.config, {n: URLS[n] for n in "0123"}, rescanned=True)
    assert isinstance(smaller, reconfig.Install) and smaller.config.joined_map() == {"3": 2}
    back = reconfig.next_step(smaller.config, B, rescanned=False)
    assert isinstance(back, reconfig.Install)
    assert back.config.joined_map() == {"3": 2, "4": back.config.epoch}
    assert Config.from_json(back.config.to_json()) == back.config


def test_a_configuration_of_an_earlier_version_agrees_but_names_no_additions() -> None:
    """Written before `joined` existed, or passed on by a peer that drops it."""
    joint = make_config(2, ["0", "1", "2"], B, URLS, {"3": 2, "4": 2})
    earlier = {k: v for k, v in joint.to_json().items() if k != "joined"}
    parsed = Config.from_json(earlier)
    assert parsed.joined_at("3") == 0 and parsed != joint and parsed.agrees_with(joint)
    assert not parsed.agrees_with(joint._replace(epoch=3))



def test_a_change_under_way_has_no_way_back() -> None:
    """Abandoning it for the old set would race its own end at the same epoch (a split
    brain, found by adversarial testing): only its new set is accepted."""
    joint = make_config(2, ["0", "1", "2"], ["0", "7", "8"], URLS | {"7": "u7", "8": "u8"},
                        {"7": 2, "8": 2})
    back = reconfig.next_step(joint, {n: URLS[n] for n in "012"}, rescanned=False)
    assert isinstance(back, reconfig.Refused) and "in progress" in back.reason


def persist(key: str, value: str) -> asyncio.Future[None]:
    """A `Membership`'s storage that has written everything at once."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def test_every_configuration_of_a_cluster_carries_its_founding_id() -> None:
    cluster = founding_id({"0": "inc-a", "1": "inc-b", "2": "inc-c"})
    assert cluster == founding_id({"2": "inc-c", "0": "inc-a", "1": "inc-b"})  # any order
    assert cluster != founding_id({"0": "inc-a", "1": "inc-b", "2": "inc-d"})
    current = A._replace(cluster=cluster)
    joint = reconfig.next_step(current, B, rescanned=False)
    assert isinstance(joint, reconfig.Install) and joint.config.cluster == cluster
    final = reconfig.next_step(joint.config, B, rescanned=True)
    assert isinstance(final, reconfig.Install) and final.config.cluster == cluster
    assert Config.from_json(final.config.to_json()) == final.config
    assert "cluster" not in A.to_json()  # founded without an id: written as before
    for bad in (7, "x" * 65):
        with pytest.raises(ValueError):
            Config.from_json({**current.to_json(), "cluster": bad})


async def test_a_replica_never_adopts_a_configuration_of_another_cluster() -> None:
    ours = A._replace(cluster="ours")
    membership = Membership("0", "inc", ours, {}, persist)
    theirs = make_config(9, ["0", "1"], None, URLS, cluster="theirs")
    assert theirs.foreign_to(ours) and not theirs.foreign_to(A)
    assert membership.adopt(theirs) is None and membership.config == ours
    # nor one without an id: it may be of a cluster founded before ids
    assert membership.adopt(make_config(2, ["0", "1"], None, URLS)) is None
    assert membership.adopt(make_config(2, ["0", "1"], None, URLS, cluster="ours"))
    assert membership.config.epoch == 2 and membership.config.cluster == "ours"
    # a replica of a cluster founded before ids takes any, as before
    old = Membership("0", "inc", A, {}, persist)
    assert old.adopt(theirs) is not None and old.config == theirs
    # a replica that has not joined takes the cluster of whoever adds it
    fresh = Membership("5", "inc5", make_config(0, ["5"], None, URLS), {}, persist)
    assert fresh.adopt(theirs._replace(members=frozenset({"0", "5"}))) is not None
    assert fresh.config.cluster == "theirs"


def test_a_member_url_cannot_be_changed_in_place() -> None:
    moved = reconfig.next_step(A, {**{n: URLS[n] for n in "012"}, "1": "http://elsewhere"},
                               rescanned=False)
    assert isinstance(moved, reconfig.Refused) and "['1']" in moved.reason
    grown = reconfig.next_step(A, {**B, "1": "http://elsewhere"}, rescanned=False)
    assert isinstance(grown, reconfig.Refused)


async def test_a_replica_that_lost_the_cluster_id_learns_it_from_a_voter() -> None:
    """A replica that ran a version without ids during a rollback kept a configuration
    without one; the changes it drove were refused by every replica that kept it."""
    membership = Membership("0", "inc", A, {}, persist)
    membership.learn_cluster_id(A._replace(epoch=2, cluster="ours"))  # another configuration
    assert membership.config == A
    membership.learn_cluster_id(A._replace(cluster="ours"))
    assert membership.config == A._replace(cluster="ours")
    membership.learn_cluster_id(A._replace(cluster="theirs"))  # an id is never replaced
    assert membership.config.cluster == "ours"

