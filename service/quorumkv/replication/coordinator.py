"""Runs client operations as CASPaxos proposals over the local acceptor and peer links.

Any replica coordinates any key. Per key, this coordinator runs one write proposal at a time
(so two of its own proposals can never share a ballot; the changes that arrive meanwhile go
together in the next one: `KeyQueue`), remembers the ballot its last accept
got promised (the one-round-trip path), and reads with one round trip when a quorum of the
replies agree.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from typing import NamedTuple

from quorumkv.core import proposer
from quorumkv.core.acceptor import Accepted, Conflict, Promise
from quorumkv.core.ballot import ZERO, Ballot
from quorumkv.core.changes import (
    Change,
    Delete,
    Folded,
    Identity,
    Outcome,
    Put,
    Single,
    apply_single,
)
from quorumkv.core.messages import (
    Forward,
    Forwarded,
    ForwardFailed,
    Read,
    Reply,
    Request,
    Unchanged,
)
from quorumkv.core.proposer import (
    Action,
    Continue,
    Done,
    Indeterminate,
    Linger,
    Proposal,
    Retry,
    Send,
)
from quorumkv.core.register import Register
from quorumkv.errors import QuorumUnavailable
from quorumkv.placement import home_of, home_order
from quorumkv.replication.key_queue import KeyQueue
from quorumkv.replication.local_acceptor import LocalAcceptor
from quorumkv.replication.membership import Membership
from quorumkv.replication.transport import PeerLink, PeerUnavailable
from quorumkv.replication.wire import FAST_CREATES, FORWARD_DEADLINES, PeerReply

log = logging.getLogger("quorumkv.coordinator")

FAST_PATH_CACHE = 100_000  # keys whose promised next ballot we remember
MAX_ATTEMPTS = 8
HOME_FRESHNESS = 0.75  # forward only to a home that answered this recently (seconds)
# The promises a home holds for its keys are only as good as its view of the cluster: while
# it was frozen (SIGSTOP, a VM stall) or cut off, other replicas may have written its keys
# with higher ballots. Its loop ticks every TICK; a tick later than STALL means it was
# stopped, and until a tick has run again on time no one-round-trip accept is tried. STALL
# is below the heartbeat timeout (0.4 s): a stop long enough for the peers to notice is
# always noticed by the stopped replica itself (which then does not claim to be settled).
TICK = 0.1
STALL = 0.3
# A replica back from a pause, a restart or a cut answers at once, but it has forgotten its
# promises and may still be catching up; as the home at once, its first write of each key
# would meet the writes of the replica that stood in for it, still in flight (duels:
# indeterminate 503s). So it is not the home again until it has been ready, and not stopped,
# for SETTLE seconds (`settled`), and every replica sees the same (each answer says whether
# its sender is settled).
SETTLE = 3.0
FORWARD_GRACE = 1.0  # seconds a forwarder waits beyond its deadline for the home's answer
# How long a read whose first quorum of replies do not agree (a write in flight, a fresh
# create's fast vote) waits for the replies still out (asked at the same time; they usually
# trail by well under a millisecond) before it writes the value back instead: a write-back
# costs two more round trips and a commit on every replica.
READ_PATIENCE = 0.02
# How long a fast create that a quorum took waits for its last voters before a classic
# round settles it without them: long enough that a busy voter's commit is rarely given up
# on (settling costs two more round trips), short enough that a voter frozen before it was
# noticed does not hold creates until their deadline.
FAST_PATIENCE = 0.25


class NotDelivered(Exception):
    """A forwarded change certainly never reached the home replica."""


class NotSent(NamedTuple):
    """The phase was not sent: the configuration changed since the proposal began."""


Decided = asyncio.Future[Action | NotSent | None]  # a broadcast's outcome; None: no decision


def _expire(decided: Decided) -> None:
    if not decided.done():
        decided.set_result(None)


PathObserver = Callable[[str], None]  # "fast_read", "slow_read", "fast_write", "conflict", …


class Coordinator:
    def __init__(
        self,
        membership: Membership,
        boot: int,
        local: LocalAcceptor,
        links: dict[str, PeerLink],
        timeout: float,
        observe: PathObserver | None = None,
        forward_links: dict[str, PeerLink] | None = None,
    ) -> None:
        self._membership = membership
        self._node = membership.node_id
        self._boot = boot
        self._local = local
        self._links = links
        self._forward_links = forward_links if forward_links is not None else {}
        self._timeout = timeout
        self._observe = observe or (lambda path: None)
        self._queue = KeyQueue(self._propose, on_batch=self._batched)
        # key -> (ballot promised with our last accept, the register it chose, its epoch)
        self._promised: OrderedDict[str, tuple[Ballot, Register, int]] = OrderedDict()
        self._ticked = 0.0  # loop time of the last `tick`
        # Whether it may be the home (`settled`). The first start of its data counts as
        # settled until it is stopped or loses readiness: a new cluster's replicas have
        # nothing to catch up, and its home is 0 from the start, whichever is ready first.
        self._settled = boot == 1
        self.ready = False  # the node's readiness, as of its last `note_readiness`
        self._settle_at = time.monotonic() + SETTLE  # once ready, settled from then on
        self._deadlines: dict[Decided, float] = {}  # broadcasts under way -> their deadline

    def _check_initialized(self) -> None:
        """Only members coordinate: peers refuse proposals from strangers (a node outside
        the membership has no identity they can check, and ballot uniqueness rests on it)."""
        if not self._membership.config.initialized:
            raise QuorumUnavailable("this replica has not joined a cluster yet")
        if not self._membership.is_voter:
            raise QuorumUnavailable("this replica is not a member of the cluster (yet); "
                                    "send requests to a member")

    async def read(self, key: str, deadline: float | None = None) -> Register:
        """A linearizable read: one round trip if a quorum of the replies agree, else a
        write-back."""
        self._check_initialized()
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._timeout
        prop, send = proposer.begin_read(key, self._membership.config, self._node, self._boot,
                                         self._local.seen(key))
        prop, action = await self._broadcast(prop, send.message, deadline)
        if action is None:
            prop, action = proposer.on_silence(prop)
        if isinstance(action, Done):
            chosen = proposer.chosen_fast_vote(prop)
            if chosen is not None:
                self._local.chosen(key, chosen)
            self._observe("fast_read")
            return action.register
        if action is None and not self._epoch_changed(prop):
            raise QuorumUnavailable(f"no quorum answered the read of {key!r} in time")
        self._observe("slow_read")
        _, register = await self.change(key, Identity(), deadline)
        return register

    async def change(
        self, key: str, change: Single, deadline: float | None = None, *,
        local_only: bool = False,
    ) -> tuple[Outcome, Register]:
        """Apply `change` to `key` through Paxos; raises `QuorumUnavailable`.

        The cluster's home replica proposes it (unless `local_only`; `quorumkv.placement`):
        with one proposer there are no duels, whose accepts taken by some acceptors and refused
        by others would leave writes indeterminate, and the home's promise from its last
        accept of the key usually saves the prepare. While the home does not answer, the next
        voter in the home order that does is the home, for the same reasons: every replica
        that sees the same peers down picks the same one.
        """
        self._check_initialized()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._timeout
        if not local_only:
            home = self.acting_home()
            link = self._forward_links.get(home)
            if home != self._node and link is not None:
                try:
                    return await self._forward(link, key, change, deadline)
                except NotDelivered:
                    pass  # the home never got it: propose it here
        if _may_be_refused(change) and not self._local.holds(key):
            # Most likely a delete or a compare-and-set of a key nobody holds. A refusal is
            # linearized where a quorum showed the state, which a read does as well as a
            # Paxos round, and writes nothing: the round's promises were kept for good, one
            # key per refused request (found by adversarial testing).
            register = await self.read(key, deadline)
            _, outcome = apply_single(change, register, ZERO)
            if outcome in (Outcome.NOT_FOUND, Outcome.PRECONDITION_FAILED):
                self._observe("refused_on_read")
                return outcome, register
        return await self._queue.run(key, change, deadline)

    async def _propose(self, key: str, change: Change,
                       deadline: float) -> tuple[Outcome | Folded, Register]:
        """Run one proposal of `change` (the key's only one in flight: `KeyQueue`)."""
        loop = asyncio.get_running_loop()
        prop, send = self._begin(key, change)
        attempts = 0
        while True:
            prop, action = await self._broadcast(prop, send.message, deadline)
            if action is None and prop.phase is proposer.Phase.FAST:
                prop, action = proposer.on_silence(prop)  # settle without the silent voters
            if isinstance(action, Send):
                send = action
                continue
            if isinstance(action, Done):
                if prop.phase is proposer.Phase.FAST:
                    self._local.chosen(key, prop.ballot)
                self._remember(key, action, prop.config.epoch)
                return action.outcome, action.register
            self._promised.pop(key, None)
            if prop.rejected:
                # A voter holds a higher ballot: another replica proposed while it could not
                # reach us (a one-way cut we did not notice), so the promises we hold for
                # other keys are suspect too. Forgetting them costs a prepare each; keeping
                # them, an indeterminate 503 each (found by adversarial testing: 10-55 503s
                # in the 3 s after such a cut healed).
                self.forget_promises()
            # Nothing accepted yet, and a voter refused our ballot while the others failed
            # (e.g. a replica that restarted and raised its floor, while another is down):
            # a ballot above the refusal may win them over; as is, every attempt would fail.
            restart = isinstance(action, Retry | NotSent) or (
                action is None and not prop.voted
                and (bool(prop.rejected) or self._epoch_changed(prop)))
            if restart:
                attempts += 1
                self._observe("conflict")
                if attempts >= MAX_ATTEMPTS or loop.time() >= deadline:
                    raise QuorumUnavailable(f"contention on {key!r}: gave up after "
                                            f"{attempts} ballots")
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** attempts))
                highest = action.highest_seen if isinstance(action, Retry) else \
                    prop.highest_seen
                seen = max(highest, self._local.seen(key))
                prop, send = proposer.begin_prepare(key, change, self._membership.config,
                                                    self._node, self._boot, seen)
                continue
            indeterminate = isinstance(action, Indeterminate) or prop.voted
            raise QuorumUnavailable(
                f"no quorum confirmed the change of {key!r} in time"
                + ("; it may still take effect" if indeterminate else ""),
                indeterminate=indeterminate)

    def _batched(self, size: int) -> None:
        for _ in range(size):
            self._observe("batched")

    def home(self) -> str:
        return home_of(self._membership.config.voters)

    def acting_home(self) -> str:
        """The first voter in the home order that answers and is settled (SETTLE); if none
        is, the first that answers: this replica, or a peer that answered recently."""
        first = None
        for node in home_order(self._membership.config.voters):
            standing = self.standing(node)
            if standing is None:
                continue
            if standing[0]:
                return node
            first = first or node
        return first or self._node

    def standing(self, node: str) -> tuple[bool, bool] | None:
        """Whether voter `node` is settled and whether it is ready: this replica's own, or
        a peer's as of its last answer; None for a peer that has not answered recently."""
        if node == self._node:
            return self._settled, self.ready
        link = self._links.get(node)
        if link is None or not link.answered_within(HOME_FRESHNESS):
            return None
        return link.settled, link.ready

    def settled(self) -> bool:
        """Whether this replica may be the home: it has been ready, and not stopped, for
        SETTLE seconds (see `__init__` for a first start)."""
        return self._settled

    def note_readiness(self, ready: bool) -> None:
        """The node's readiness, told every heartbeat interval: settle, or unsettle."""
        if not ready:
            if self.ready or not self._settled:  # lost readiness, or still catching up
                self._unsettle()
        elif not self._settled and time.monotonic() >= self._settle_at and not self._defers():
            self._settled = True
        self.ready = ready

    def _unsettle(self) -> None:
        """Stopped (`tick`) or not ready: not the home until SETTLE after it is ready."""
        self._settled = False
        self._settle_at = time.monotonic() + SETTLE

    def _defers(self) -> bool:
        """Whether a voter before this one in the home order is ready but has not settled
        yet. Then no one had settled when it came back (every replica restarted): settling
        first would take the home from it only to hand it back once it settles (found by
        adversarial testing: 2-3 hand-overs after a full restart), so wait for it. Not for
        one that is not ready: it may never be (one that cannot reach a quorum still
        answers; found by the same testing: nobody settled, and writes stopped). A replica
        settled already stays so when such a voter comes back: it is the stand-in."""
        for node in home_order(self._membership.config.voters):
            if node == self._node:
                return False
            if self.standing(node) == (False, True):
                return True
        return False

    async def _forward(self, link: PeerLink, key: str, change: Single,
                       deadline: float) -> tuple[Outcome, Register]:
        """Have the home run `change` by `deadline` (`run_forwarded`); its answer may take
        until FORWARD_GRACE past it to arrive."""
        self._observe("forward")
        remaining = deadline - asyncio.get_running_loop().time()
        heartbeated = self._links.get(link.peer_id)  # knows the home's protocol sooner
        protocol = max(link.protocol, heartbeated.protocol if heartbeated else 1)
        expires = time.time() + remaining if protocol >= FORWARD_DEADLINES else None
        try:
            async with asyncio.timeout(remaining + FORWARD_GRACE):
                reply = await asyncio.shield(link.call(Forward(key, change, expires)))
        except (PeerUnavailable, TimeoutError) as exc:
            if isinstance(exc, PeerUnavailable) and not exc.sent:
                raise NotDelivered from None
            raise QuorumUnavailable(f"the home replica of {key!r} did not answer ({exc}); the "
                                    "change may still take effect", indeterminate=True) from None
        if isinstance(reply, Forwarded):
            return reply.outcome, reply.register
        if isinstance(reply, ForwardFailed):
            raise QuorumUnavailable(reply.detail, indeterminate=reply.indeterminate)
        raise QuorumUnavailable(f"unexpected reply from the home replica: {reply!r}",
                                indeterminate=True)

    async def run_forwarded(self, forward: Forward) -> Forwarded | ForwardFailed:
        """Run a change forwarded to us as the home, never forwarding it again.

        Not after its deadline, the client request's: the forwarder answers its client
        `503` then at the latest, and the client may write the key again. A forward
        arrives that late only when this replica was stopped (SIGSTOP, a VM stall) or the
        network held it; run then, a write its client saw fail would overwrite a newer one.
        So a forwarded write answered `503` cannot overwrite a write made after its deadline.
        """
        loop = asyncio.get_running_loop()
        deadline = None
        if forward.expires is not None:
            remaining = forward.expires - time.time()
            if remaining <= 0:
                self._observe("forward_expired")
                log.warning("a forwarded change arrived after its deadline and was not run "
                            "(this replica was stopped, the network held it, or the "
                            "replicas' clocks disagree)",
                            extra={"key": forward.key, "late_seconds": round(-remaining, 3)})
                return ForwardFailed(f"the change of {forward.key!r} reached the home replica "
                                     "after its deadline; it was not run", False)
            deadline = loop.time() + min(remaining, self._timeout)
        try:
            outcome, register = await self.change(forward.key, forward.change, deadline,
                                                  local_only=True)
        except QuorumUnavailable as exc:
            return ForwardFailed(exc.detail, exc.indeterminate)
        return Forwarded(outcome, register)

    def _may_answer(self, nodes: Iterable[str]) -> bool:
        """Whether any of `nodes` may still answer: this replica (its reply waits for a
        commit), or a peer not known to be down."""
        return any(node == self._node or ((link := self._links.get(node)) is not None
                                          and link.reachable) for node in nodes)

    def _epoch_changed(self, prop: Proposal) -> bool:
        return prop.config.epoch != self._membership.config.epoch

    def _begin(self, key: str, change: Change) -> tuple[Proposal, Send]:
        config = self._membership.config
        cached = self._promised.pop(key, None)
        if cached is not None and cached[2] == config.epoch \
                and self._fast_path_safe(key, cached[0]):
            self._observe("fast_write")
            return proposer.begin_accept(key, change, config, self._node, self._boot,
                                         cached[0], cached[1])
        if isinstance(change, Put) and change.create_only and self._fast_create_likely(key):
            self._observe("fast_create")
            return proposer.begin_fast_create(key, change, config, self._node, self._boot,
                                              self._local.seen(key))
        self._observe("slow_write")
        return proposer.begin_prepare(key, change, config, self._node, self._boot,
                                      self._local.seen(key))

    def _fast_create_likely(self, key: str) -> bool:
        """Try a create's fast round only when it should succeed: it needs every voter, and
        one that refuses or does not answer can make the create indeterminate (`503`). So:
        this replica holds no vote for the key, and every voter answers and speaks a
        protocol with fast creates."""
        if self._local.state(key).accepted != ZERO or self._stalled():
            return False
        for node in self._membership.config.voters:
            link = self._links.get(node)
            if node != self._node and (link is None or not link.reachable
                                       or link.protocol < FAST_CREATES):
                return False
        return True

    def _fast_path_safe(self, key: str, ballot: Ballot) -> bool:
        """Skip the prepare only while it can hardly fail.

        If another proposer prepared the key since, our acceptor has promised it more than
        `ballot`. Others prepare our keys only while they cannot reach us (or we them), and
        then we forget our promises (`forget_promises`, `tick`). A quorum must be
        reachable: an accept nobody answers is indeterminate, a prepare can be retried.
        """
        if self._local.state(key).promised != ballot:
            return False
        if self._stalled():
            return False
        reachable = {self._node} | {n for n, link in self._links.items() if link.reachable}
        return self._membership.config.is_quorum(reachable)

    def _stalled(self) -> bool:
        """Stopped a while ago, and `tick` has not caught up yet."""
        return asyncio.get_running_loop().time() - self._ticked > STALL

    async def tick(self) -> None:
        """Every TICK seconds: end the broadcasts whose deadline passed, and watch for
        stalls: a late tick means this process was stopped, so forget every promise held,
        as after a restart.

        One sweep per tick rather than a timer per broadcast: arming and cancelling a
        uvloop timer costs about 6 µs, and the sweep measured 6% less CPU per GET
        (bench/README.md, fifteenth pass); a deadline met up to a tick late is still well
        within its bound."""
        loop = asyncio.get_running_loop()
        self._ticked = loop.time()
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            if now - self._ticked > STALL:
                log.warning("this replica was stopped; forgetting the promises it held",
                            extra={"stopped_seconds": round(now - self._ticked - TICK, 3),
                                   "promises": len(self._promised)})
                self.forget_promises()
                self._unsettle()
            self._ticked = now
            for decided in [d for d, deadline in self._deadlines.items() if deadline <= now]:
                _expire(decided)

    def forget_promises(self) -> None:
        """Drop every cached promise (e.g. on a configuration change)."""
        self._promised.clear()

    def _remember(self, key: str, done: Done, epoch: int) -> None:
        if done.next_ballot is None:
            return
        self._promised[key] = (done.next_ballot, done.register, epoch)
        if len(self._promised) > FAST_PATH_CACHE:
            self._promised.popitem(last=False)

    async def _broadcast(
        self, prop: Proposal, message: Request, deadline: float
    ) -> tuple[Proposal, Action | NotSent | None]:
        """Send `message` to every voter and feed replies until the proposal decides, or
        until READ_PATIENCE after it said `Linger`.

        Every voter, even for reads: asking one peer instead of two was measured slower
        both with a POST per batch (+65% CPU per read: smaller batches) and on streams
        (11.8k vs 14-15k reads/s: a read then waits for that peer rather than the faster
        of two). Returns None as the action when the deadline or the patience passed, or
        every voter answered (or failed) without a decision.
        """
        loop = asyncio.get_running_loop()
        decided: Decided = loop.create_future()
        if self._epoch_changed(prop):
            return prop, NotSent()  # made under a superseded configuration: never send it
        state = [prop]
        voters = prop.config.voters
        outstanding = [len(voters)]
        patience: list[asyncio.TimerHandle] = []  # set at the first Linger

        def feed(node: str, reply: Reply | None) -> None:
            outstanding[0] -= 1
            if decided.done():
                return
            if reply is not None:
                state[0], action = proposer.on_reply(state[0], node, message, reply)
                if isinstance(action, Linger):
                    if not self._may_answer(state[0].config.voters - state[0].ok):
                        decided.set_result(None)  # the rest are known down: don't wait
                        return
                    if not patience:
                        wait = READ_PATIENCE if prop.phase is proposer.Phase.READ \
                            else FAST_PATIENCE
                        patience.append(loop.call_later(wait, _expire, decided))
                elif not isinstance(action, Continue):
                    decided.set_result(action)
                    return
            if outstanding[0] == 0:
                decided.set_result(None)

        local = self._local.apply(message) if self._node in voters else None
        sent = message
        if isinstance(message, Read) and local is not None and isinstance(local[0], Promise):
            sent = message._replace(known=local[0].accepted)  # peers that agree say Unchanged

        def on_answer(node: str, answer: PeerReply | PeerUnavailable) -> None:
            if isinstance(answer, Unchanged):  # the peer holds what we sent as known
                assert local is not None
                feed(node, local[0])
            else:  # anything but a vote (a failure, a bug) counts as no answer
                feed(node, answer if isinstance(answer, Promise | Accepted | Conflict) else None)

        def on_durable(node: str, reply: Reply, future: asyncio.Future[None]) -> None:
            feed(node, None if future.cancelled() or future.exception() else reply)

        for node in voters:
            if node == self._node:
                assert local is not None
                reply, durable = local
                if durable is None:
                    loop.call_soon(feed, node, reply)
                else:
                    durable.add_done_callback(partial(on_durable, node, reply))
            elif (link := self._links.get(node)) is not None:
                link.send(sent, prop.config, partial(on_answer, node))
            else:
                outstanding[0] -= 1
        if outstanding[0] == 0 and not decided.done():
            decided.set_result(None)
        if decided.done():
            return state[0], decided.result()
        self._deadlines[decided] = deadline  # `tick` ends it then
        try:
            action = await decided  # before reading state[0]: the replies update it
        finally:
            del self._deadlines[decided]
            for timer in patience:
                timer.cancel()
        return state[0], action


def _may_be_refused(change: Single) -> bool:
    """A change that does nothing to some states: a delete (of an absent key), or one that
    names a version (`If-Match`). A create is refused only when the key exists."""
    return isinstance(change, Delete) or (isinstance(change, Put) and change.if_match is not None)
