"""The proposer of one operation on one key, as a pure state machine.

`begin_*` functions return the first state and the message to broadcast; `on_reply` feeds one
reply and returns the next state and what to do; `on_silence` says no more replies will come
in time. The async coordinator and the simulated network of the tests both drive this same
code, so what the simulation checks is what runs.

Safety rules encoded here:
- a phase counts replies only from voters of the configuration, each at most once;
- after an accept was sent the operation is never retried unless every voter explicitly
  rejected it (then nothing was accepted anywhere); otherwise the outcome is indeterminate;
- a fast create (Fast Paxos, `begin_fast_create`) is done only when every voter accepted its
  fast vote; it is retried when so many refused that the others are no quorum (no prepare
  can ever adopt the vote then, see `choose`);
- when a quorum took the fast vote but a voter refused it (e.g. a purge had just raised that
  voter's promise floor), a classic round at a higher ballot *settles* the create (`_settle`),
  and the create is never retried after that (see `Proposal.voted`);
- a read returns a value without writing it back only when a quorum of its replies hold the
  same regular vote (or none), or every voter of a fast vote holds it (`_read_step`).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from quorumkv.core.acceptor import Accepted, Conflict, Promise
from quorumkv.core.ballot import ZERO, Ballot
from quorumkv.core.changes import Change, Folded, Identity, Outcome, Put, apply_change
from quorumkv.core.messages import Accept, FastAccept, Prepare, Read, Reply, Request
from quorumkv.core.quorum import Config
from quorumkv.core.register import EMPTY, Register

NO_VOTE = Promise(ZERO, EMPTY)


class Phase(enum.Enum):
    READ = "read"
    PREPARE = "prepare"
    ACCEPT = "accept"
    FAST = "fast"  # a create's fast round: accepted by every voter, or not done

    @property
    def voted(self) -> bool:
        """Acceptors may hold this proposal's value: retrying could apply it twice."""
        return self in (Phase.ACCEPT, Phase.FAST)


class Proposal(NamedTuple):
    key: str
    change: Change
    config: Config
    node: str
    boot: int
    phase: Phase
    ballot: Ballot
    highest_seen: Ballot
    ok: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()
    replies: tuple[tuple[str, Promise], ...] = ()  # (sender, promise or read reply) so far
    proposed: Register | None = None
    outcome: Outcome | Folded | None = None
    message: Request | None = None  # what the current phase broadcast; older replies are stale
    settling: Register | None = None  # the fast vote a classic round settles (`_settle`)

    @property
    def voted(self) -> bool:
        """Acceptors may hold this proposal's value: retrying could apply it twice."""
        return self.phase.voted or self.settling is not None


class Continue(NamedTuple):
    """Keep waiting for replies."""


class Linger(NamedTuple):
    """A quorum answered, and only the replies still out can finish the operation this way
    (a read whose replies do not agree yet, a fast vote a quorum took): wait a little for
    them, then call `on_silence`."""


class Send(NamedTuple):
    """Start a new phase: broadcast `message` to every voter."""

    message: Request


class Done(NamedTuple):
    outcome: Outcome | Folded  # Folded: each change of a batch
    register: Register
    next_ballot: Ballot | None  # promised by the acceptors of the accept, if any


class Retry(NamedTuple):
    """Nothing was accepted; start over with a prepare at a higher ballot (after a backoff)."""

    highest_seen: Ballot


class Indeterminate(NamedTuple):
    """An accept was sent but no quorum confirmed it: it may or may not take effect."""


Action = Continue | Linger | Send | Done | Retry | Indeterminate


def begin_read(
    key: str, config: Config, node: str, boot: int, seen: Ballot
) -> tuple[Proposal, Send]:
    message = Read(key)
    proposal = Proposal(key, Identity(), config, node, boot, Phase.READ, seen, seen,
                        message=message)
    return proposal, Send(message)


def begin_prepare(
    key: str, change: Change, config: Config, node: str, boot: int, seen: Ballot
) -> tuple[Proposal, Send]:
    ballot = seen.next(node, boot)
    message = Prepare(key, ballot)
    proposal = Proposal(key, change, config, node, boot, Phase.PREPARE, ballot, ballot,
                        message=message)
    return proposal, Send(message)


def begin_accept(
    key: str, change: Change, config: Config, node: str, boot: int,
    ballot: Ballot, current: Register,
) -> tuple[Proposal, Send]:
    """The one-round-trip path: `ballot` was promised to us with our previous accept."""
    proposal = Proposal(key, change, config, node, boot, Phase.ACCEPT, ballot, ballot)
    return _to_accept(proposal, current)


def begin_fast_create(
    key: str, change: Put, config: Config, node: str, boot: int, seen: Ballot
) -> tuple[Proposal, Send]:
    """A create of a key this proposer holds no vote for, in one round trip (Fast Paxos):
    the fast vote goes to every voter without a prepare, and counts only if all take it."""
    assert change.create_only
    ballot = seen.next(node, boot)
    register, outcome = apply_change(change, EMPTY, ballot)
    message = FastAccept(key, ballot, register, ballot.next(node, boot), config.voters)
    proposal = Proposal(key, change, config, node, boot, Phase.FAST, ballot, ballot,
                        proposed=register, outcome=outcome, message=message)
    return proposal, Send(message)


def choose(replies: tuple[tuple[str, Promise], ...]) -> Promise:
    """The state a proposal goes on from, given the replies of a quorum (sender, promise).

    The classic rule is the highest accepted ballot. Fast votes are the exception: one was
    chosen only if every voter it names cast it, so, if above the highest regular vote, it
    is adopted when every replier among those voters holds it. A fast vote some such
    replier lacks was not chosen, and its voters held no vote before it
    (`acceptor.fast_accept`): they count as holding none. Repliers outside its voters (added
    to the cluster since) say nothing about it: a membership change's rescan reads a
    majority of the old members, so it still finds the vote.
    """
    best = max((r for _, r in replies if not r.fast), key=lambda r: r.accepted,
               default=NO_VOTE)
    fast = {r.accepted: r for _, r in replies if r.fast and r.accepted > best.accepted}
    for ballot in sorted(fast, reverse=True):
        vote = fast[ballot]
        held = [r == vote for node, r in replies if node in vote.fast]
        if held and all(held):
            return vote
    return best


def on_reply(
    proposal: Proposal, sender: str, request: Request, reply: Reply
) -> tuple[Proposal, Action]:
    """Feed the `reply` of `sender` to `request`; replies to earlier phases are ignored."""
    if request != proposal.message:
        return proposal, Continue()
    if sender in proposal.ok or sender in proposal.rejected \
            or sender not in proposal.config.voters:
        return proposal, Continue()
    if isinstance(reply, Conflict):
        proposal = proposal._replace(
            rejected=proposal.rejected | {sender},
            highest_seen=max(proposal.highest_seen, reply.seen),
        )
        return _after_rejection(proposal)
    if proposal.phase.voted:
        if not isinstance(reply, Accepted):
            return proposal, Continue()
        proposal = proposal._replace(ok=proposal.ok | {sender})
        enough = proposal.ok == proposal.config.voters if proposal.phase is Phase.FAST \
            else proposal.config.is_quorum(proposal.ok)
        if not enough:
            return _after_rejection(proposal)
        assert proposal.proposed is not None and proposal.outcome is not None
        assert isinstance(proposal.message, Accept | FastAccept)
        return proposal, Done(proposal.outcome, proposal.proposed, proposal.message.next_promise)
    if not isinstance(reply, Promise):
        return proposal, Continue()
    return _on_promise(proposal, sender, reply)


def _on_promise(proposal: Proposal, sender: str, reply: Promise) -> tuple[Proposal, Action]:
    proposal = proposal._replace(ok=proposal.ok | {sender},
                                 replies=(*proposal.replies, (sender, reply)),
                                 highest_seen=max(proposal.highest_seen, reply.accepted))
    if not proposal.config.is_quorum(proposal.ok):
        return proposal, Continue()
    best = choose(proposal.replies)
    if proposal.settling is not None:
        return _settled(proposal, best)
    if proposal.phase is Phase.READ:
        return _read_step(proposal, best)
    proposal, send = _to_accept(proposal, best.register)
    return proposal, send


def _read_step(proposal: Proposal, best: Promise) -> tuple[Proposal, Action]:
    """A read that heard a quorum: done in one round trip if a vote it heard is chosen and
    no newer one can have been chosen before it began; else linger while the replies still
    out could show one (every voter was asked); else write the newest value back.

    - A fast vote is chosen once every voter it names holds it.
    - A regular vote (or none) that a quorum of the repliers hold is chosen, and it is the
      newest chosen one: a write completed before the read began was held, at its ballot or
      a higher one, by a quorum, which meets this one. A newer vote some replier holds is a
      write in flight, ordered after the read. So a read that meets a write in flight needs
      no write-back once a quorum of its replies agree, whichever way they agree; nor does a
      read of a fresh create once all its voters are heard.
    """
    config, replies = proposal.config, proposal.replies
    answer: Promise | None = None
    if best.fast:  # `choose` adopted it: every replier among its voters holds it
        if best.fast <= proposal.ok:
            answer = best
        could_finish = best.fast <= config.voters  # the rest of them were asked
    elif all(r.accepted == best.accepted for _, r in replies):
        answer, could_finish = best, True  # the usual case: a quorum replied, all the same
    else:
        holders: dict[Ballot, set[str]] = {}
        for node, r in replies:
            if not r.fast:
                holders.setdefault(r.accepted, set()).add(node)
        answer = next((r for node, r in replies if not r.fast
                       and config.is_quorum(holders[r.accepted])), None)
        pending = config.voters - proposal.ok
        could_finish = any(config.is_quorum(nodes | pending) for nodes in holders.values())
    if answer is not None:
        return proposal, read_done(answer)
    return (proposal, Linger()) if could_finish else _write_back(proposal)


def read_done(vote: Promise) -> Done:
    """A read finished on `vote`: its value, or "not found" for none or a tombstone."""
    outcome = Outcome.READ if vote.register.exists else Outcome.NOT_FOUND
    return Done(outcome, vote.register, None)


def on_silence(proposal: Proposal) -> tuple[Proposal, Action | None]:
    """No more replies will come in time (the rest failed, or the driver's patience ran out).

    A read that heard a quorum, but no quorum of agreeing replies, finishes with a
    write-back; a fast vote that a quorum took is settled by a classic round (`_settle`),
    so a frozen voter does not hold the create up; anything else has nothing to go on
    (None).
    """
    if proposal.phase is Phase.READ and proposal.config.is_quorum(proposal.ok):
        return _write_back(proposal)
    if proposal.phase is Phase.FAST and proposal.config.is_quorum(proposal.ok):
        return _settle(proposal)
    return proposal, None


def chosen_fast_vote(proposal: Proposal) -> Ballot | None:
    """The ballot of the fast vote a finished read heard from every one of its voters: it
    is chosen, and may be read like a regular vote from now on."""
    if proposal.phase is not Phase.READ or not any(r.fast for _, r in proposal.replies):
        return None  # (the usual case, first: this runs after every read)
    best = choose(proposal.replies)
    return best.accepted if best.fast and best.fast <= proposal.ok else None


def _write_back(proposal: Proposal) -> tuple[Proposal, Send]:
    """Replicas disagree, or agree on a vote not known to be chosen: finish the latest
    value with an identity change."""
    return begin_prepare(proposal.key, Identity(), proposal.config, proposal.node,
                         proposal.boot, proposal.highest_seen)


def _to_accept(proposal: Proposal, current: Register) -> tuple[Proposal, Send]:
    register, outcome = apply_change(proposal.change, current, proposal.ballot)
    return _accept(proposal, register, outcome)


def _accept(proposal: Proposal, register: Register,
            outcome: Outcome | Folded) -> tuple[Proposal, Send]:
    next_promise = proposal.ballot.next(proposal.node, proposal.boot)
    message = Accept(proposal.key, proposal.ballot, register, next_promise)
    proposal = proposal._replace(phase=Phase.ACCEPT, ok=frozenset(), rejected=frozenset(),
                                 proposed=register, outcome=outcome, message=message)
    return proposal, Send(message)


def _after_rejection(proposal: Proposal) -> tuple[Proposal, Action]:
    """Decide once a quorum can no longer be reached in this phase."""
    voters = proposal.config.voters
    if proposal.phase is Phase.FAST:
        if not proposal.config.is_quorum(voters - proposal.rejected):
            return proposal, Retry(proposal.highest_seen)  # no quorum can adopt the vote
        if proposal.ok | proposal.rejected == voters:
            return _settle(proposal)
        if proposal.config.is_quorum(proposal.ok):
            return proposal, Linger()  # the rest may still take it; if not, settle
        return proposal, Continue()
    if proposal.config.is_quorum(voters - proposal.rejected):
        return proposal, Continue()
    if proposal.phase is not Phase.ACCEPT or proposal.rejected == voters:
        if proposal.settling is not None:
            return proposal, Indeterminate()  # a new proposal could not tell our vote apart
        return proposal, Retry(proposal.highest_seen)
    if proposal.ok:
        return proposal, Indeterminate()
    return proposal, Continue()  # nobody accepted yet: wait for the rest, maybe all reject


def _settle(proposal: Proposal) -> tuple[Proposal, Send]:
    """A quorum took the fast vote, and some voter refused it or did not answer in time: it
    is neither known chosen nor safe to retry. A classic round above every ballot seen, and
    above the promise the vote carried (the takers refuse anything up to it), settles it.

    Without the silent voters too: the settling prepare's repliers promise above the vote,
    so a voter that takes it late cannot make it chosen unless every replier holds it, and
    then `choose` adopts it (`_settled`)."""
    assert isinstance(proposal.message, FastAccept)
    promised = proposal.message.next_promise or proposal.ballot
    ballot = max(proposal.highest_seen, promised).next(proposal.node, proposal.boot)
    message = Prepare(proposal.key, ballot)
    return proposal._replace(phase=Phase.PREPARE, ballot=ballot, ok=frozenset(),
                             rejected=frozenset(), replies=(), settling=proposal.proposed,
                             message=message), Send(message)


def _settled(proposal: Proposal, best: Promise) -> tuple[Proposal, Action]:
    """What the settling round's prepare found decides the create:

    - our fast vote, adopted (or our value, accepted by someone's round): the create took
      effect or will with this round's accept, which re-proposes it unchanged;
    - a key never written (no replier holds a regular vote), while some replier still holds
      our fast vote: that vote was never chosen (`choose` did not adopt it), and nothing can
      have been chosen and purged since, since a purge needs every voter to have accepted the
      tombstone over our vote. The create applies now, at this round's ballot;
    - anything else (another value, a tombstone, or our vote gone from every replier): ours
      may have taken effect before it, so the outcome is indeterminate.
    """
    assert proposal.settling is not None and proposal.outcome is not None
    if best.register == proposal.settling:
        register, outcome = best.register, proposal.outcome
    elif best.register == EMPTY and any(r.register == proposal.settling
                                        for _, r in proposal.replies):
        register, outcome = apply_change(proposal.change, EMPTY, proposal.ballot)
    else:
        return proposal, Indeterminate()
    return _accept(proposal, register, outcome)
