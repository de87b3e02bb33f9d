"""Unit tests of the pure protocol core: ballots, change functions, acceptor, proposer."""

from __future__ import annotations

import pytest
from quorumkv.core import acceptor, proposer
from quorumkv.core.acceptor import INITIAL, Accepted, Conflict, Promise
from quorumkv.core.ballot import ZERO, Ballot
from quorumkv.core.changes import (
    Batch,
    Delete,
    Folded,
    Identity,
    Outcome,
    Put,
    apply_change,
    inner_version,
)
from quorumkv.core.keys import InvalidKey, decode_key
from quorumkv.core.messages import Accept, FastAccept, Prepare, Read
from quorumkv.core.quorum import Config
from quorumkv.core.register import EMPTY, Register, etag_listed, etag_matches

B1 = Ballot(1, "a", 1)
B2 = Ballot(2, "b", 1)
CONFIG = Config(1, frozenset({"a", "b", "c"}))


def test_ballot_next_is_greater_and_owned() -> None:
    assert ZERO.next("a", 1) == Ballot(0, "a", 1)
    assert Ballot(5, "z", 3).next("a", 1) == Ballot(6, "a", 1)
    assert Ballot(5, "a", 1).next("a", 2) == Ballot(5, "a", 2)
    for seen in (ZERO, B1, B2, Ballot(7, "c", 9)):
        assert seen.next("b", 4) > seen


def test_ballot_wire_round_trip_and_rejects_garbage() -> None:
    assert Ballot.from_wire(list(B2.to_wire())) == B2
    for bad in (None, [1, 2], [1, "a", "x"], ["1", "a", 1], [True, "a", 1], "x"):
        with pytest.raises(ValueError):
            Ballot.from_wire(bad)


def test_put_create_replace_and_preconditions() -> None:
    created, outcome = apply_change(Put(b"v"), EMPTY, B1)
    assert outcome is Outcome.CREATED and created == Register(b"v", B1)
    replaced, outcome = apply_change(Put(b"w"), created, B2)
    assert outcome is Outcome.REPLACED and replaced.version == B2
    same, outcome = apply_change(Put(b"x", create_only=True), created, B2)
    assert outcome is Outcome.PRECONDITION_FAILED and same == created
    same, outcome = apply_change(Put(b"x", if_match='"stale"'), created, B2)
    assert outcome is Outcome.PRECONDITION_FAILED
    cas, outcome = apply_change(Put(b"x", if_match=created.etag), created, B2)
    assert outcome is Outcome.REPLACED and cas.value == b"x"


def test_delete_leaves_versioned_tombstone_and_404s_when_absent() -> None:
    tomb, outcome = apply_change(Delete(), Register(b"v", B1), B2)
    assert outcome is Outcome.DELETED and tomb == Register(None, B2) and not tomb.exists
    again, outcome = apply_change(Delete(), tomb, Ballot(3, "a", 1))
    assert outcome is Outcome.NOT_FOUND and again == tomb
    _, outcome = apply_change(Put(b"x", create_only=True), tomb, Ballot(3, "a", 1))
    assert outcome is Outcome.CREATED


def test_identity_keeps_version() -> None:
    reg = Register(b"v", B1)
    assert apply_change(Identity(), reg, B2) == (reg, Outcome.READ)


def test_a_batch_applies_its_changes_in_turn_and_stores_only_the_last_state() -> None:
    current = Register(b"v0", B1)
    batch = Batch((Put(b"v1"), Put(b"v2", if_match=current.etag), Identity(),
                   Put(b"v3", create_only=True), Delete(), Put(b"v4")))
    final, folded = apply_change(batch, current, B2)
    assert final == Register(b"v4", B2)  # what the acceptors store: the proposal's ballot
    assert isinstance(folded, Folded)
    (r1, o1), (r2, o2), (r3, o3), (r4, o4), (r5, o5), (r6, o6) = folded.results
    assert (o1, r1) == (Outcome.REPLACED, Register(b"v1", inner_version(B2, 0)))
    # v1 changed the version: an If-Match on the one before no longer holds
    assert (o2, r2) == (Outcome.PRECONDITION_FAILED, r1)
    assert (o3, r3) == (Outcome.READ, r1)
    assert (o4, r4) == (Outcome.PRECONDITION_FAILED, r1)
    assert (o5, r5) == (Outcome.DELETED, Register(None, inner_version(B2, 4)))
    assert (o6, r6) == (Outcome.CREATED, final)


def test_a_batch_tells_each_write_a_version_of_its_own() -> None:
    final, folded = apply_change(Batch((Put(b"a"), Put(b"b"), Put(b"c"))), EMPTY, B2)
    assert isinstance(folded, Folded)
    etags = [register.etag for register, _ in folded.results]
    assert len(set(etags)) == 3 and etags[-1] == final.etag == Register(b"c", B2).etag
    # an If-Match with the ETag of an overwritten write fails against the stored state
    for register, _ in folded.results[:-1]:
        assert not etag_matches(register.etag or "", final)
        assert register.version is not None and register.version.boot < 0  # never a ballot


def test_a_batch_that_changes_nothing_keeps_the_version() -> None:
    current = Register(b"v", B1)
    batch = Batch((Identity(), Put(b"x", if_match='"stale"'), Put(b"y", create_only=True)))
    final, folded = apply_change(batch, current, B2)
    assert final == current
    assert isinstance(folded, Folded)
    assert [outcome for _, outcome in folded.results] == [
        Outcome.READ, Outcome.PRECONDITION_FAILED, Outcome.PRECONDITION_FAILED]
    assert all(register == current for register, _ in folded.results)


def test_a_batch_whose_last_write_is_refused_stores_the_write_before_it() -> None:
    final, folded = apply_change(Batch((Put(b"a"), Put(b"b", create_only=True))), EMPTY, B2)
    assert final == Register(b"a", B2)
    assert isinstance(folded, Folded)
    assert folded.results == ((final, Outcome.CREATED), (final, Outcome.PRECONDITION_FAILED))


def test_etag_matching() -> None:
    reg = Register(b"v", B1)
    assert etag_matches(reg.etag or "", reg)
    assert etag_matches("*", reg)
    assert etag_matches(f'"x", {reg.etag}', reg)
    assert not etag_matches("W/" + (reg.etag or ""), reg)
    assert not etag_matches("*", EMPTY)


def test_if_none_match_compares_weakly() -> None:
    etag = Register(b"v", B1).etag
    assert etag is not None
    assert etag_listed(f"W/{etag}", etag, weak=True)
    assert etag_listed(f'"x" ,{etag}', etag, weak=True)
    assert etag_listed("*", etag, weak=True) and not etag_listed("*", None, weak=True)
    assert not etag_listed('"x", W/"y"', etag, weak=True)
    assert not etag_listed(f"W/{etag}", etag)  # If-Match: strong


def test_acceptor_promises_only_higher_ballots() -> None:
    state, reply = acceptor.prepare(INITIAL, B1)
    assert reply == Promise(ZERO, EMPTY) and state.promised == B1
    same, reply = acceptor.prepare(state, B1)
    assert isinstance(reply, Conflict) and same is state


def test_acceptor_accepts_promised_and_piggybacks_next_promise() -> None:
    state, _ = acceptor.prepare(INITIAL, B1)
    nxt = B1.next("a", 1)
    state, reply = acceptor.accept(state, B1, Register(b"v", B1), nxt)
    assert reply == Accepted() and state.accepted == B1 and state.promised == nxt
    # the piggy-backed promise lets the next accept in without a prepare
    state2, reply = acceptor.accept(state, nxt, Register(b"w", nxt), nxt.next("a", 1))
    assert reply == Accepted() and state2.register.value == b"w"
    # a lower ballot is refused with the highest ballot seen
    _, reply = acceptor.accept(state, B1, Register(b"x", B1), None)
    assert reply == Conflict(nxt)


def test_key_decoding() -> None:
    assert decode_key("a%2Fb") == "a/b"
    assert decode_key("%E2%82%AC") == "€"
    for bad in ("", "%", "%zz", "%E2%82", "x" * 1025, "%FF"):
        with pytest.raises(InvalidKey):
            decode_key(bad)
    assert decode_key("k" * 1024) == "k" * 1024


def test_quorums_simple_and_joint() -> None:
    assert CONFIG.is_quorum({"a", "b"}) and not CONFIG.is_quorum({"a"})
    assert not CONFIG.is_quorum({"a", "x", "y"})
    joint = Config(2, frozenset({"a", "b", "c"}), frozenset({"c", "d", "e"}))
    assert not joint.is_quorum({"a", "b"})
    assert not joint.is_quorum({"d", "e"})
    assert joint.is_quorum({"a", "c", "d"})


def _promise(state: Register, ballot: Ballot = ZERO) -> Promise:
    return Promise(ballot, state)


def test_proposer_write_happy_path() -> None:
    prop, send = proposer.begin_prepare("k", Put(b"v"), CONFIG, "a", 1, ZERO)
    assert isinstance(send.message, Prepare)
    prop, action = proposer.on_reply(prop, "a", send.message, _promise(EMPTY))
    assert isinstance(action, proposer.Continue)
    prop, action = proposer.on_reply(prop, "b", send.message, _promise(EMPTY))
    assert isinstance(action, proposer.Send) and isinstance(action.message, Accept)
    accept = action.message
    assert accept.register.value == b"v"
    prop, action = proposer.on_reply(prop, "a", accept, Accepted())
    prop, action = proposer.on_reply(prop, "c", accept, Accepted())
    assert isinstance(action, proposer.Done) and action.outcome is Outcome.CREATED
    assert action.next_ballot is not None and action.next_ballot > accept.ballot


def test_proposer_adopts_highest_accepted_value() -> None:
    prop, send = proposer.begin_prepare("k", Identity(), CONFIG, "a", 1, B2)
    old, new = Register(b"old", B1), Register(b"new", B2)
    prop, _ = proposer.on_reply(prop, "a", send.message, Promise(B2, new))
    prop, action = proposer.on_reply(prop, "b", send.message, Promise(B1, old))
    assert isinstance(action, proposer.Send) and isinstance(action.message, Accept)
    assert action.message.register == new


def test_proposer_ignores_stale_duplicate_and_foreign_replies() -> None:
    prop, send = proposer.begin_prepare("k", Put(b"v"), CONFIG, "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, _promise(EMPTY))
    prop, action = proposer.on_reply(prop, "a", send.message, _promise(EMPTY))  # duplicate
    assert isinstance(action, proposer.Continue)
    prop, action = proposer.on_reply(prop, "zz", send.message, _promise(EMPTY))  # not a voter
    assert isinstance(action, proposer.Continue)
    other = Prepare("k", Ballot(99, "a", 1))
    prop, action = proposer.on_reply(prop, "b", other, _promise(EMPTY))  # older phase
    assert isinstance(action, proposer.Continue)


def test_prepare_rejected_by_majority_retries_above_highest_seen() -> None:
    prop, send = proposer.begin_prepare("k", Put(b"v"), CONFIG, "a", 1, ZERO)
    high = Ballot(10, "c", 3)
    prop, action = proposer.on_reply(prop, "b", send.message, Conflict(high))
    assert isinstance(action, proposer.Continue)
    prop, action = proposer.on_reply(prop, "c", send.message, Conflict(high))
    assert action == proposer.Retry(high)


def _in_accept_phase() -> tuple[proposer.Proposal, Accept]:
    prop, send = proposer.begin_prepare("k", Put(b"v"), CONFIG, "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, _promise(EMPTY))
    prop, action = proposer.on_reply(prop, "b", send.message, _promise(EMPTY))
    assert isinstance(action, proposer.Send) and isinstance(action.message, Accept)
    return prop, action.message


def test_accept_partly_accepted_then_refused_is_indeterminate_never_retried() -> None:
    prop, accept = _in_accept_phase()
    prop, _ = proposer.on_reply(prop, "a", accept, Accepted())
    prop, action = proposer.on_reply(prop, "b", accept, Conflict(B2))
    assert isinstance(action, proposer.Continue)
    prop, action = proposer.on_reply(prop, "c", accept, Conflict(B2))
    assert isinstance(action, proposer.Indeterminate)


def test_accept_refused_by_every_voter_may_retry() -> None:
    prop, accept = _in_accept_phase()
    for node in ("a", "b"):
        prop, action = proposer.on_reply(prop, node, accept, Conflict(B2))
    assert isinstance(action, proposer.Continue)  # c might still accept: wait for it
    prop, action = proposer.on_reply(prop, "c", accept, Conflict(B2))
    assert action == proposer.Retry(B2)


def test_a_read_is_done_in_one_round_trip_when_a_quorum_of_its_replies_agree() -> None:
    reg = Register(b"v", B1)
    newer = Register(b"w", B2)
    prop, send = proposer.begin_read("k", CONFIG, "a", 1, ZERO)
    assert isinstance(send.message, Read)
    prop, _ = proposer.on_reply(prop, "a", send.message, Promise(B1, reg))
    prop, action = proposer.on_reply(prop, "b", send.message, Promise(B1, reg))
    assert isinstance(action, proposer.Done) and action.register == reg
    # a write in flight: a took it, b not yet; c (asked too) decides
    prop, send = proposer.begin_read("k", CONFIG, "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, Promise(B2, newer))
    prop, action = proposer.on_reply(prop, "b", send.message, Promise(B1, reg))
    assert action == proposer.Linger()
    _, action = proposer.on_reply(prop, "c", send.message, Promise(B2, newer))
    assert isinstance(action, proposer.Done) and action.register == newer  # a and c: chosen
    # b and c agree on the older vote: it is the newest chosen, the write is ordered after
    _, action = proposer.on_reply(prop, "c", send.message, Promise(B1, reg))
    assert isinstance(action, proposer.Done) and action.register == reg
    # three replies, three votes: none is known chosen, write the newest back
    _, action = proposer.on_reply(prop, "c", send.message, Promise(ZERO, EMPTY))
    assert isinstance(action, proposer.Send) and isinstance(action.message, Prepare)
    assert action.message.ballot > B2
    _, action = proposer.on_silence(prop)  # c did not answer in time
    assert isinstance(action, proposer.Send) and isinstance(action.message, Prepare)
    # five voters: a quorum (three) can still agree while one reply is out
    five = Config(1, frozenset("abcde"))
    prop, send = proposer.begin_read("k", five, "a", 1, ZERO)
    for node, reply in (("a", Promise(B2, newer)), ("b", Promise(B1, reg)),
                        ("c", Promise(B1, reg)), ("d", Promise(ZERO, EMPTY))):
        prop, action = proposer.on_reply(prop, node, send.message, reply)
    assert action == proposer.Linger()
    _, action = proposer.on_reply(prop, "e", send.message, Promise(B1, reg))
    assert isinstance(action, proposer.Done) and action.register == reg
    _, action = proposer.on_reply(prop, "e", send.message, Promise(B2, newer))
    assert isinstance(action, proposer.Send)


def test_promise_floor_covers_promises_lost_in_a_restart() -> None:
    assert acceptor.raised_floor(Ballot(5, "a", 1), floor=10) is None
    raised = acceptor.raised_floor(Ballot(10, "a", 1), floor=10)
    assert raised is not None and raised > 10
    promised, _ = acceptor.prepare(INITIAL, Ballot(9, "a", 1))
    back = acceptor.restored(INITIAL, floor=10)  # the promise of 9 was in memory only
    _, reply = acceptor.accept(back, Ballot(9, "b", 1), Register(b"v", B1), None)
    assert isinstance(reply, Conflict)  # what it promised not to accept, it still refuses
    kept = acceptor.restored(promised._replace(promised=Ballot(20, "a", 1)), floor=10)
    assert kept.promised == Ballot(20, "a", 1)


def test_purge_forgets_only_the_checked_tombstone_and_covers_its_promise() -> None:
    deleted, _ = apply_change(Delete(None), Register(b"v", B1), Ballot(7, "a", 1))
    tombstone = acceptor.AcceptorState(Ballot(8, "a", 1), Ballot(7, "a", 1), deleted)
    assert acceptor.is_tombstone(tombstone)
    floor = acceptor.purge_floor(tombstone, Ballot(7, "a", 1))
    assert floor is not None
    forgotten = acceptor.restored(INITIAL, floor)  # what a purged acceptor holds for the key
    for ballot in (Ballot(7, "a", 1), Ballot(8, "a", 1), Ballot(8, "z", 9)):
        _, reply = acceptor.prepare(forgotten, ballot)
        assert isinstance(reply, Conflict)  # it still refuses what it promised to refuse
        _, reply = acceptor.accept(forgotten, ballot, Register(b"old", B1), None)
        assert isinstance(reply, Conflict)
    _, reply = acceptor.prepare(forgotten, Ballot(floor, "b", 1))
    assert reply == Promise(ZERO, EMPTY)  # later proposals start from "absent"
    # kept: accepted at another ballot since the check, or not a tombstone at all
    assert acceptor.purge_floor(tombstone, Ballot(6, "a", 1)) is None
    live = tombstone._replace(register=Register(b"back", Ballot(7, "a", 1)))
    assert acceptor.purge_floor(live, Ballot(7, "a", 1)) is None
    assert acceptor.purge_floor(INITIAL, ZERO) is None


# -- fast creates ---------------------------------------------------------------------------

VOTERS = CONFIG.voters


def test_fast_vote_only_from_an_acceptor_without_a_vote() -> None:
    reg = Register(b"v", B1)
    state, reply = acceptor.fast_accept(INITIAL, B1, reg, B2, VOTERS)
    assert reply == Accepted() and state == acceptor.AcceptorState(B2, B1, reg, VOTERS)
    assert acceptor.report(state) == Promise(B1, reg, VOTERS)
    prepared, _ = acceptor.prepare(INITIAL, B1)  # a promise alone is no vote
    assert acceptor.fast_accept(prepared, B1, reg, None, VOTERS)[1] == Accepted()
    voted, _ = acceptor.accept(INITIAL, B1, Register(b"w", B1), None)
    assert acceptor.fast_accept(voted, B2, Register(b"v", B2), None, VOTERS) == \
        (voted, Conflict(B1))
    promised, _ = acceptor.prepare(INITIAL, B2)  # promised higher: refused
    assert acceptor.fast_accept(promised, B1, reg, None, VOTERS) == (promised, Conflict(B2))


FAST = Promise(B2, Register(b"fast", B2), VOTERS)
REGULAR = Promise(B1, Register(b"old", B1))
NONE = Promise(ZERO, EMPTY)


def test_choose_adopts_a_fast_vote_only_when_every_replier_among_its_voters_holds_it() -> None:
    assert proposer.choose((("a", FAST), ("b", FAST))) == FAST
    assert proposer.choose((("a", FAST), ("b", REGULAR))) == REGULAR  # b lacks it
    assert proposer.choose((("a", FAST), ("b", NONE))) == proposer.NO_VOTE
    third = Ballot(3, "c", 1)
    other = Promise(third, Register(b"other", third), VOTERS)
    assert proposer.choose((("a", FAST), ("b", other))) == proposer.NO_VOTE
    newer = Promise(third, Register(b"new", third))
    assert proposer.choose((("a", FAST), ("b", FAST), ("c", newer))) == newer
    assert proposer.choose((("a", REGULAR), ("b", newer))) == newer


def test_choose_ignores_repliers_added_after_a_fast_vote() -> None:
    """A vote chosen by every voter of {a, b, c}; the cluster grew by d and e since. Their
    empty replies do not make the vote look unchosen (the rescan of the change relies on it)."""
    joint = (("a", FAST), ("b", FAST), ("d", NONE))
    assert proposer.choose(joint) == FAST
    assert proposer.choose((("d", NONE), ("e", NONE), ("a", FAST))) == FAST
    assert proposer.choose((("c", NONE), ("d", NONE), ("a", FAST))) == proposer.NO_VOTE


def _fast_create() -> tuple[proposer.Proposal, FastAccept]:
    prop, send = proposer.begin_fast_create("k", Put(b"v", create_only=True), CONFIG, "a", 1,
                                            ZERO)
    assert isinstance(send.message, FastAccept) and send.message.register.value == b"v"
    assert send.message.voters == VOTERS
    return prop, send.message


def test_fast_create_is_done_only_when_every_voter_accepted() -> None:
    prop, vote = _fast_create()
    prop, action = proposer.on_reply(prop, "a", vote, Accepted())
    assert isinstance(action, proposer.Continue)
    prop, action = proposer.on_reply(prop, "b", vote, Accepted())
    assert isinstance(action, proposer.Linger)  # a quorum is not enough: wait for c
    _, action = proposer.on_reply(prop, "c", vote, Accepted())
    assert isinstance(action, proposer.Done) and action.outcome is Outcome.CREATED
    assert action.register == vote.register and action.next_ballot == vote.next_promise


def test_fast_create_a_voter_never_answers_is_settled_above_its_promise() -> None:
    """A voter frozen before anyone noticed: the takers promised the vote's next ballot, so
    the settling round goes above that, and re-proposes the create that its prepare adopts."""
    prop, vote = _fast_create()
    for node in ("a", "b"):
        prop, _ = proposer.on_reply(prop, node, vote, Accepted())
    prop, action = proposer.on_silence(prop)
    assert isinstance(action, proposer.Send) and isinstance(action.message, Prepare)
    assert vote.next_promise is not None and action.message.ballot > vote.next_promise
    taken = Promise(vote.ballot, vote.register, VOTERS)
    prop, _ = proposer.on_reply(prop, "a", action.message, taken)
    prop, action = proposer.on_reply(prop, "b", action.message, taken)
    assert isinstance(action, proposer.Send) and isinstance(action.message, Accept)
    assert action.message.register == vote.register
    prop, _ = proposer.on_reply(prop, "a", action.message, Accepted())
    _, action = proposer.on_reply(prop, "b", action.message, Accepted())
    assert isinstance(action, proposer.Done) and action.outcome is Outcome.CREATED


def test_fast_create_refused_by_all_but_a_minority_retries() -> None:
    """No quorum is left that could hold the fast vote unanimously: it can never be adopted,
    so the create may run again through a prepare."""
    prop, vote = _fast_create()
    prop, _ = proposer.on_reply(prop, "a", vote, Accepted())
    prop, action = proposer.on_reply(prop, "b", vote, Conflict(B1))
    assert isinstance(action, proposer.Continue)
    prop, action = proposer.on_reply(prop, "c", vote, Conflict(B2))
    assert action == proposer.Retry(B2)


def _settling() -> tuple[proposer.Proposal, FastAccept, Prepare]:
    """A fast create that a and b took and c refused (its floor was at B2)."""
    prop, vote = _fast_create()
    prop, _ = proposer.on_reply(prop, "a", vote, Accepted())
    prop, _ = proposer.on_reply(prop, "b", vote, Accepted())
    prop, action = proposer.on_reply(prop, "c", vote, Conflict(B2))
    assert isinstance(action, proposer.Send) and isinstance(action.message, Prepare)
    assert action.message.ballot > B2 and prop.voted  # never retried from now on
    return prop, vote, action.message


def _settle_with(replies: dict[str, Promise]) -> tuple[proposer.Proposal, proposer.Action]:
    prop, _, prepare = _settling()
    action: proposer.Action = proposer.Continue()
    for node, reply in replies.items():
        prop, action = proposer.on_reply(prop, node, prepare, reply)
    return prop, action


def test_a_fast_create_one_voter_refused_is_settled_by_a_classic_round() -> None:
    prop, vote, _ = _settling()
    ours = Promise(vote.ballot, vote.register, VOTERS)
    # the repliers that took it: the vote is adopted and re-proposed unchanged
    prop, action = _settle_with({"a": ours, "b": ours})
    assert isinstance(action, proposer.Send) and isinstance(action.message, Accept)
    accept = action.message
    assert accept.register == vote.register
    prop, _ = proposer.on_reply(prop, "a", accept, Accepted())
    prop, action = proposer.on_reply(prop, "c", accept, Accepted())
    assert isinstance(action, proposer.Done) and action.outcome is Outcome.CREATED
    assert action.register == vote.register
    # the refuser among them: the vote cannot have been chosen, the key is new: create now
    prop, action = _settle_with({"a": ours, "c": NONE})
    assert isinstance(action, proposer.Send) and isinstance(action.message, Accept)
    assert action.message.register == Register(b"v", prop.ballot)


def test_settling_a_fast_create_is_indeterminate_whenever_ours_may_have_come_first() -> None:
    prop, vote, _ = _settling()
    ours = Promise(vote.ballot, vote.register, VOTERS)
    later = Ballot(5, "b", 1)
    deleted = Promise(later, Register(None, later))
    other = Promise(later, Register(b"other", later))
    for replies in ({"a": ours, "b": other},  # someone else's value after ours
                    {"a": deleted, "c": NONE},  # ours may have been created, then deleted
                    {"b": NONE, "c": NONE}):  # nobody holds ours: it may have been purged
        _, action = _settle_with(replies)
        assert isinstance(action, proposer.Indeterminate), replies
    prop, _, prepare = _settling()
    prop, _ = proposer.on_reply(prop, "a", prepare, Conflict(later))
    prop, action = proposer.on_reply(prop, "b", prepare, Conflict(later))
    assert isinstance(action, proposer.Indeterminate)  # not Retry: a retry would answer 412


def test_read_of_a_fast_vote_returns_it_only_from_all_its_voters() -> None:
    prop, send = proposer.begin_read("k", CONFIG, "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, FAST)
    prop, action = proposer.on_reply(prop, "b", send.message, FAST)
    assert action == proposer.Linger()  # a quorum holds it; c was asked too
    assert proposer.chosen_fast_vote(prop) is None
    waited, action = proposer.on_reply(prop, "c", send.message, FAST)
    assert isinstance(action, proposer.Done) and action.register == FAST.register
    assert proposer.chosen_fast_vote(waited) == FAST.accepted
    _, action = proposer.on_reply(prop, "c", send.message, NONE)  # c never took it
    assert isinstance(action, proposer.Send) and isinstance(action.message, Prepare)
    _, gave_up = proposer.on_silence(prop)  # c did not answer in time: write it back
    assert isinstance(gave_up, proposer.Send) and isinstance(gave_up.message, Prepare)
    assert gave_up.message.ballot > FAST.accepted
    prop, send = proposer.begin_read("k", CONFIG, "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, FAST)
    assert proposer.on_silence(prop)[1] is None  # no quorum heard: nothing to go on
    prop, send = proposer.begin_read("k", Config(2, frozenset({"a", "b"})), "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, FAST)
    prop, action = proposer.on_reply(prop, "b", send.message, FAST)
    # its voter c left the cluster since: it will never be heard, write it back at once
    assert isinstance(action, proposer.Send) and isinstance(action.message, Prepare)
    two = Promise(B2, FAST.register, frozenset({"a", "b"}))
    prop, send = proposer.begin_read("k", CONFIG, "a", 1, ZERO)
    prop, _ = proposer.on_reply(prop, "a", send.message, two)
    prop, action = proposer.on_reply(prop, "b", send.message, two)
    assert isinstance(action, proposer.Done) and action.register == two.register
