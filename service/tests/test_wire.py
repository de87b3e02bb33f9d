"""The peer protocol's encoding: every message survives a round trip; garbage is a ValueError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from quorumkv.core.acceptor import Accepted, Conflict, Promise
from quorumkv.core.ballot import Ballot
from quorumkv.core.changes import Delete, Identity, Outcome, Put
from quorumkv.core.messages import (
    Accept,
    BucketQuery,
    BucketReply,
    DigestQuery,
    DigestReply,
    FastAccept,
    Forward,
    Forwarded,
    ForwardFailed,
    Prepare,
    Purge,
    PurgeReply,
    Read,
    Unchanged,
)
from quorumkv.core.quorum import make_config
from quorumkv.core.register import Register
from quorumkv.replication import wire

B = Ballot(3, "1", 2)
REG = Register(b"\x00value", B)
CONFIG = make_config(4, ["0", "1"], ["0", "1", "2"], {str(i): f"http://n{i}" for i in range(3)})

REQUESTS = [
    Read("k"), Read("k", B), Prepare("k/é", B), Accept("k", B, REG, Ballot(4, "1", 2)),
    Accept("k", B, Register(None, B), None), DigestQuery(), BucketQuery(255),
    Forward("k", Put(b"v", '"1.1.0"', False)), Forward("k", Put(b"v", None, True)),
    Forward("k", Delete(None)), Forward("k", Identity()), Forward("k", Identity(), 1.8e9),
    Purge("k", B),
    FastAccept("k", B, REG, Ballot(4, "1", 2), frozenset({"0", "1", "2"})),
]
REPLIES = [
    Promise(B, REG), Promise(B, REG, fast=frozenset({"0", "1"})), Accepted(), Conflict(B),
    DigestReply((1, 2**63)),
    BucketReply((("a", B), ("b", None))), Forwarded(Outcome.CREATED, REG),
    ForwardFailed("no quorum", True), PurgeReply(True), PurgeReply(False), Unchanged(),
    wire.Failure("why"),
]


def test_every_message_round_trips() -> None:
    data = wire.pack_envelope("0", "inc", CONFIG, REQUESTS)
    envelope = wire.unpack_envelope(data)
    assert envelope == wire.Envelope("0", "inc", CONFIG, REQUESTS)
    answers = wire.unpack_replies(wire.pack_replies("inc2", REPLIES, settled=False, ready=True))
    assert answers == wire.Answers("inc2", REPLIES, wire.PROTOCOL, False, True)


def test_a_peer_that_names_no_protocol_speaks_the_first() -> None:
    """Replicas from before fast creates: a coordinator must not send them a FastAccept."""
    answers = wire.unpack_replies(msgpack.packb({"inc": "i", "replies": [["A"]]}))
    assert answers.protocol == 1 < wire.FAST_CREATES
    assert answers.settled and answers.ready  # as every replica was, before they said so


@pytest.mark.parametrize("field", ["settled", "ready"])
@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_settled_and_ready_must_be_bools(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        wire.unpack_replies(msgpack.packb({"inc": "i", "replies": [], field: value}))


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"from": "0"}),
    msgpack.packb({"from": "0", "inc": "i", "config": CONFIG.to_json(), "msgs": [["x"]]}),
    msgpack.packb({"from": "0", "inc": "i", "config": CONFIG.to_json(),
                   "msgs": [["a", "k", [1, "n"], [b"v", None], None]]}),
    msgpack.packb({"from": "0", "inc": "i", "config": CONFIG.to_json(),
                   "msgs": [["f", "k", ["put", "not bytes", None, False]]]}),
    *(msgpack.packb({"from": "0", "inc": "i", "config": CONFIG.to_json(),
                     "msgs": [["f", "k", ["id"], expires]]})
      for expires in ("soon", True, float("nan"), float("inf"), None, [1])),
    msgpack.packb({"from": "0", "inc": "i", "config": {"epoch": "1"}, "msgs": []}),
])
def test_malformed_envelopes_are_value_errors(body: bytes) -> None:
    with pytest.raises(ValueError):
        wire.unpack_envelope(body)


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | TEXT | st.binary()


@given(st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner),
                    max_leaves=20))
def test_arbitrary_msgpack_never_raises_anything_but_value_error(value: object) -> None:
    body = msgpack.packb(value)
    with contextlib.suppress(ValueError):
        wire.unpack_envelope(body)
    with contextlib.suppress(ValueError):
        wire.unpack_replies(body)


@given(st.sampled_from(["r", "p", "a", "d", "b", "f", "g"]), st.lists(
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=8), max_size=5))
def test_well_formed_envelope_with_random_messages(kind: str, args: list[object]) -> None:
    body = msgpack.packb({"from": "0", "inc": "i", "config": CONFIG.to_json(),
                          "msgs": [[kind, *args]]})
    with contextlib.suppress(ValueError):
        wire.unpack_envelope(body)


@given(st.sampled_from(["P", "A", "C", "D", "B", "R", "X", "G", "U", "E"]), st.lists(
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=8), max_size=4))
def test_replies_with_random_content(kind: str, args: list[object]) -> None:
    with contextlib.suppress(ValueError):
        wire.unpack_replies(msgpack.packb({"inc": "i", "replies": [[kind, *args]]}))
