"""A deterministic simulated network for the pure protocol core.

Acceptors are the real `core.acceptor` functions; clients drive the real `core.proposer`
state machine (prepare, the one-round-trip accept path, fast reads, fast creates). The network
loses, delays, reorders and duplicates messages; acceptors crash and restart exactly as replicas do:
they keep what was committed (accepted states and the promise floor) and lose the promises
kept in memory (or, in the deliberately broken mode, everything). One seed decides it all.

A collector purges tombstones as `replication.tombstones` does: it reads the key from every
acceptor and, if all hold the same tombstone, asks each to forget it (`acceptor.purge_floor`).

The checks are exact because every register carries its lineage: each written version records
the version it was computed from (a value computed from "absent" after a purge, from the
purged tombstone). Then (1) every value chosen by a quorum must descend from
every value chosen at a lower ballot, and (2) an operation that completed before another
began must be in the later one's lineage (real-time order, the heart of linearizability).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections import defaultdict
from typing import Any

from quorumkv.core import acceptor, proposer
from quorumkv.core.acceptor import INITIAL, AcceptorState
from quorumkv.core.ballot import ZERO, Ballot
from quorumkv.core.changes import Change, Delete, Identity, Outcome, Put
from quorumkv.core.messages import Accept, FastAccept, Prepare, Purge, Read, Reply, Request
from quorumkv.core.quorum import Config
from quorumkv.core.register import EMPTY

READ_PATIENCE = 0.05  # per tick: a read waiting for its last replies gives up


@dataclasses.dataclass
class Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 10
    crash_rate: float = 0.0  # per tick, per acceptor
    downtime: int = 50
    amnesia: bool = False  # BROKEN on purpose: a restarted acceptor forgets everything
    no_floor: bool = False  # BROKEN on purpose: promises are lost on restart, no floor
    collect_rate: float = 0.0  # per tick: the collector tries to purge one key's tombstone
    collect_on_quorum: bool = False  # BROKEN on purpose: purge once a quorum holds it
    purge_without_floor: bool = False  # BROKEN on purpose: a purge forgets the key's promise
    fast_create_rate: float = 0.0  # share of creates that try the fast round first
    fast_on_quorum: bool = False  # BROKEN on purpose: a fast create is done once a quorum
    # (not every acceptor) took it
    read_unchosen: bool = False  # BROKEN on purpose: a read returns the newest vote a quorum
    # of replies shows without knowing it chosen (a fast vote a quorum holds, not all its
    # voters; a regular vote fewer than a quorum hold)


@dataclasses.dataclass
class Collection:
    key: str
    deadline: int
    replies: dict[str, acceptor.Promise] = dataclasses.field(default_factory=dict)
    done: bool = False


@dataclasses.dataclass
class OpRecord:
    client: int
    key: str
    change: Change
    invoked: int
    completed: int | None = None
    outcome: str = "pending"  # ok | indeterminate | failed
    version: Ballot | None = None  # the register version the op observed or produced


@dataclasses.dataclass
class ClientState:
    index: int
    node: str
    ops_left: int
    op: OpRecord | None = None
    proposal: proposer.Proposal | None = None
    deadline: int = 0
    retry_at: int | None = None
    cache: dict[str, tuple[Ballot, Any]] = dataclasses.field(default_factory=dict)
    last_etag: dict[str, str | None] = dataclasses.field(default_factory=dict)
    attempts: int = 0
    fast_base: Any = None  # the cached register a one-round-trip accept was computed from
    high: Ballot = ZERO  # the highest ballot this client used or saw: new
    # proposals start above it, so the client never uses one ballot twice (as a replica's
    # own acceptor ensures)


class Simulation:
    def __init__(self, seed: int, acceptors: int, clients: int, ops: int, keys: int,
                 faults: Faults) -> None:
        self.rng = random.Random(seed)
        self.nodes = [f"n{i}" for i in range(acceptors)]
        self.config = Config(1, frozenset(self.nodes))
        self.faults = faults
        self.state: dict[str, dict[str, AcceptorState]] = {n: {} for n in self.nodes}
        self.persisted: dict[str, dict[str, AcceptorState]] = {n: {} for n in self.nodes}
        self.floor: dict[str, int] = {n: 0 for n in self.nodes}
        # what a key an acceptor holds nothing for counts as promised at: the floor of its
        # last restart, raised by purges (as `LocalAcceptor` does; prepares raise only the
        # durable floor, for the keys they promise)
        self.initial: dict[str, int] = {n: 0 for n in self.nodes}
        self.down_until: dict[str, int] = {}
        self.keys = [f"k{i}" for i in range(keys)]
        self.clients = [ClientState(i, f"c{i}", ops) for i in range(clients)]
        self.queue: list[tuple[int, int, tuple[Any, ...]]] = []
        self.seq = 0
        self.now = 0
        self.history: list[OpRecord] = []
        self.parent: dict[tuple[str, Ballot], Ballot | None] = {}
        self.accepted_at: dict[tuple[str, Ballot], tuple[Any, set[str]]] = {}
        self.chosen: dict[str, list[tuple[Ballot, Ballot | None]]] = defaultdict(list)
        self.values = 0
        self.problems: list[str] = []
        self.collections: list[Collection] = []
        self.purged_head: dict[str, Ballot] = {}  # key -> version of its last purged tombstone
        self.purged = 0
        self.fast_creates = 0  # creates done in their fast round
        self.settled_creates = 0  # fast creates a voter refused, done by a settling round
        self.fast_vote_reads = 0  # reads that heard every voter of a fast vote hold it
        self.reads_gave_up = 0  # reads that stopped waiting for their last replies
        self.reads_past_writes = 0  # reads done with an older value while a newer was in flight

    # -- network ---------------------------------------------------------------------------
    def send(self, event: tuple[Any, ...]) -> None:
        if self.rng.random() < self.faults.loss:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            self.seq += 1
            at = self.now + 1 + self.rng.randrange(self.faults.max_delay)
            heapq.heappush(self.queue, (at, self.seq, event))

    def is_down(self, node: str) -> bool:
        return self.down_until.get(node, -1) > self.now

    # -- acceptors -------------------------------------------------------------------------
    def deliver_request(self, client: int, node: str, request: Request, op: OpRecord) -> None:
        if self.is_down(node):
            return
        states = self.state[node]
        state = states.get(request.key, acceptor.restored(INITIAL, self.initial[node]))
        reply: Reply
        if isinstance(request, Read):
            reply = acceptor.report(state)
        elif isinstance(request, Prepare):
            state, reply = acceptor.prepare(state, request.ballot)
            raised = acceptor.raised_floor(request.ballot, self.floor[node])
            if isinstance(reply, acceptor.Promise) and raised is not None \
                    and not self.faults.no_floor:
                self.floor[node] = raised  # durable before the reply is sent
        else:
            if isinstance(request, Accept):
                state, reply = acceptor.accept(state, request.ballot, request.register,
                                               request.next_promise)
            else:
                state, reply = acceptor.fast_accept(state, request.ballot, request.register,
                                                    request.next_promise, request.voters)
            if isinstance(reply, acceptor.Accepted):
                self.persisted[node][request.key] = state
                self.note_accept(node, request)
        states[request.key] = state
        self.send(("reply", client, node, request, reply, op))

    def deliver_collect(self, index: int, node: str, request: Read | Purge) -> None:
        if self.is_down(node):
            return
        state = self.state[node].get(request.key)
        if isinstance(request, Read):
            state = state or acceptor.restored(INITIAL, self.initial[node])
            self.send(("collected", index, node, acceptor.report(state)))
            return
        need = None if state is None else acceptor.purge_floor(state, request.accepted)
        if need is not None:  # the row's removal and the floor: one durable commit
            if not self.faults.purge_without_floor:
                self.floor[node] = max(self.floor[node], need)
                self.initial[node] = max(self.initial[node], need)
            del self.state[node][request.key]
            self.persisted[node].pop(request.key, None)
            self.purged += 1

    def start_collection(self) -> None:
        key = self.rng.choice(self.keys)
        self.collections.append(Collection(key, self.now + 100))
        for node in self.nodes:
            self.send(("collect", len(self.collections) - 1, node, Read(key)))

    def deliver_collected(self, index: int, node: str, reply: acceptor.Promise) -> None:
        collection = self.collections[index]
        if collection.done or self.now > collection.deadline:
            return
        collection.replies[node] = reply
        needed = self.config.is_quorum(set(collection.replies)) \
            if self.faults.collect_on_quorum else len(collection.replies) == len(self.nodes)
        if not needed:
            return
        collection.done = True
        accepted = {r.accepted for r in collection.replies.values()}
        registers = {r.register for r in collection.replies.values()}
        if len(accepted) != 1 or len(registers) != 1:
            return
        register, ballot = registers.pop(), accepted.pop()
        if not acceptor.is_tombstone(acceptor.Promise(ballot, register)):
            return
        head = self.absent_version(collection.key, register.version)
        if head is not None:
            self.purged_head[collection.key] = head
        for target in self.nodes:
            self.send(("collect", index, target, Purge(collection.key, ballot)))

    def absent_version(self, key: str, version: Ballot | None) -> Ballot | None:
        """What a version of None stands for: the last purged tombstone of the key, if any."""
        return self.purged_head.get(key) if version is None else version

    def note_accept(self, node: str, request: Accept | FastAccept) -> None:
        """Record a vote; a value is chosen once a quorum (a fast vote: every acceptor)
        cast it."""
        slot = (request.key, request.ballot)
        register, nodes = self.accepted_at.setdefault(slot, (request.register, set()))
        if register != request.register:
            self.problems.append(f"{request.key}: two values accepted at {request.ballot}")
            return

        def chosen(voters: set[str]) -> bool:
            if isinstance(request, FastAccept):
                return voters == request.voters
            return self.config.is_quorum(voters)

        if isinstance(request, FastAccept) and not nodes:
            # an acceptor that takes it holds no vote: the key is absent there, so the vote
            # follows the last purge before now, whatever it was when the vote was sent (and
            # the same for every later taker: no purge can pass a key one of them holds)
            self.parent[slot] = self.absent_version(request.key, None)
        before = chosen(nodes)
        nodes.add(node)
        if not before and chosen(nodes):
            self.chosen[request.key].append(
                (request.ballot, self.absent_version(request.key, request.register.version)))

    def maybe_crash(self) -> None:
        for node in self.nodes:
            if self.is_down(node) or self.rng.random() >= self.faults.crash_rate:
                continue
            down = sum(self.is_down(n) for n in self.nodes)
            if (down + 1) * 2 >= len(self.nodes) + 1 and down + 1 > (len(self.nodes) - 1) // 2:
                continue  # keep a majority up so the run makes progress
            self.down_until[node] = self.now + self.faults.downtime
            if self.faults.amnesia:
                self.state[node], self.persisted[node], self.floor[node] = {}, {}, 0
                self.initial[node] = 0
            else:  # promises in memory are lost; the floor covers them
                floor = self.initial[node] = self.floor[node]
                self.state[node] = {key: acceptor.restored(state, floor)
                                    for key, state in self.persisted[node].items()}

    # -- clients ---------------------------------------------------------------------------
    def new_change(self, client: ClientState, key: str) -> Change:
        roll = self.rng.random()
        self.values += 1
        value = f"{client.node}-{self.values}".encode()
        etag = client.last_etag.get(key)
        if roll < 0.35:
            return Put(value)
        if roll < 0.5 and etag:
            return Put(value, if_match=etag)
        if roll < 0.6:
            return Put(value, create_only=True)
        if roll < 0.7:
            return Delete(if_match=etag if self.rng.random() < 0.5 else None)
        return Identity()

    def start_op(self, client: ClientState) -> None:
        key = self.rng.choice(self.keys)
        change = self.new_change(client, key)
        client.op = OpRecord(client.index, key, change, self.now)
        client.deadline = self.now + 400
        client.attempts = 0
        self.history.append(client.op)
        cached = client.cache.pop(key, None)
        if isinstance(change, Identity):
            client.proposal, send = proposer.begin_read(key, self.config, client.node, 1,
                                                        client.high)
        elif cached is not None and self.rng.random() < 0.7:
            client.fast_base = cached[1]
            client.proposal, send = proposer.begin_accept(
                key, change, self.config, client.node, 1, cached[0], cached[1])
        elif isinstance(change, Put) and change.create_only \
                and self.rng.random() < self.faults.fast_create_rate:
            client.proposal, send = proposer.begin_fast_create(
                key, change, self.config, client.node, 1, client.high)
        else:
            client.proposal, send = proposer.begin_prepare(
                key, change, self.config, client.node, 1, client.high)
        self.broadcast(client, send.message)

    def broadcast(self, client: ClientState, message: Request) -> None:
        assert client.proposal is not None
        client.high = max(client.high, client.proposal.ballot)
        if isinstance(message, Accept | FastAccept) \
                and message.register.version == message.ballot:
            replies = client.proposal.replies
            if isinstance(message, FastAccept):
                base = EMPTY  # computed from "absent"
            else:
                base = proposer.choose(replies).register if replies else client.fast_base
            self.parent[(message.key, message.ballot)] = self.absent_version(message.key,
                                                                             base.version)
        for node in self.nodes:
            self.send(("request", client.index, node, message, client.op))

    def finish(self, client: ClientState, outcome: str, version: Ballot | None = None) -> None:
        assert client.op is not None
        client.op.completed = self.now
        client.op.outcome = outcome
        client.op.version = self.absent_version(client.op.key, version) \
            if outcome == "ok" else version
        client.op = None
        client.proposal = None
        client.fast_base = None
        client.retry_at = None
        client.ops_left -= 1

    def deliver_reply(self, index: int, node: str, request: Request, reply: Reply,
                      op: OpRecord) -> None:
        client = self.clients[index]
        if client.proposal is None or client.retry_at is not None or client.op is not op:
            return  # a reply to an earlier operation: replicas match replies to their calls
        client.proposal, action = proposer.on_reply(client.proposal, node, request, reply)
        client.high = max(client.high, client.proposal.highest_seen)
        prop = client.proposal
        if self.faults.fast_on_quorum and prop.phase is proposer.Phase.FAST \
                and isinstance(action, proposer.Continue | proposer.Linger
                               | proposer.Indeterminate) \
                and self.config.is_quorum(prop.ok):
            assert prop.proposed is not None and isinstance(prop.message, FastAccept)
            action = proposer.Done(Outcome.CREATED, prop.proposed, None)
        if self.faults.read_unchosen and isinstance(action, proposer.Linger) \
                and prop.phase is proposer.Phase.READ:
            action = proposer.read_done(proposer.choose(prop.replies))
        self.act(client, action)

    def act(self, client: ClientState, action: proposer.Action) -> None:
        assert client.op is not None and client.proposal is not None
        key = client.op.key
        if isinstance(action, proposer.Send):
            self.broadcast(client, action.message)
        elif isinstance(action, proposer.Done):
            self.fast_creates += client.proposal.phase is proposer.Phase.FAST
            self.settled_creates += client.proposal.settling is not None
            self.fast_vote_reads += proposer.chosen_fast_vote(client.proposal) is not None
            self.reads_past_writes += client.proposal.phase is proposer.Phase.READ \
                and proposer.choose(client.proposal.replies).register != action.register
            if action.next_ballot is not None:
                client.cache[key] = (action.next_ballot, action.register)
            client.last_etag[key] = action.register.etag
            self.finish(client, "ok", action.register.version)
        elif isinstance(action, proposer.Retry):
            client.attempts += 1
            client.retry_at = self.now + self.rng.randrange(1, 5 * 2 ** min(client.attempts, 6))
            client.proposal = client.proposal._replace(highest_seen=action.highest_seen)
        elif isinstance(action, proposer.Indeterminate):
            self.finish(client, "indeterminate")

    def tick_client(self, client: ClientState) -> None:
        if client.op is None:
            if client.ops_left > 0 and self.rng.random() < 0.3:
                self.start_op(client)
            return
        assert client.proposal is not None
        if self.now >= client.deadline:
            accepted = client.proposal.voted
            self.finish(client, "indeterminate" if accepted else "failed")
        elif client.proposal.phase in (proposer.Phase.READ, proposer.Phase.FAST) \
                and self.config.is_quorum(client.proposal.ok) \
                and self.rng.random() < READ_PATIENCE:
            # a read or a fast create waiting for its last replies gives up on them at some
            # point (a fast create is then settled by a classic round)
            self.reads_gave_up += client.proposal.phase is proposer.Phase.READ
            client.proposal, action = proposer.on_silence(client.proposal)
            assert action is not None
            self.act(client, action)
        elif client.retry_at is None and client.proposal.phase is proposer.Phase.PREPARE \
                and client.proposal.rejected and not client.proposal.voted \
                and self.rng.random() < READ_PATIENCE:
            # refused by some voter while the others stay silent: the coordinator tries a
            # ballot above the refusal once the rest have failed (e.g. are known down)
            self.act(client, proposer.Retry(client.proposal.highest_seen))
        elif client.retry_at is not None and self.now >= client.retry_at:
            client.retry_at = None
            prop = client.proposal
            client.proposal, send = proposer.begin_prepare(
                prop.key, prop.change, self.config, client.node, 1, prop.highest_seen)
            self.broadcast(client, send.message)

    # -- run -------------------------------------------------------------------------------
    def run(self, max_ticks: int = 200_000) -> None:
        while self.now < max_ticks:
            if all(c.ops_left == 0 and c.op is None for c in self.clients):
                return
            self.maybe_crash()
            if self.rng.random() < self.faults.collect_rate:
                self.start_collection()
            for client in self.clients:
                self.tick_client(client)
            while self.queue and self.queue[0][0] <= self.now:
                _, _, event = heapq.heappop(self.queue)
                if event[0] == "request":
                    self.deliver_request(event[1], event[2], event[3], event[4])
                elif event[0] == "collect":
                    self.deliver_collect(event[1], event[2], event[3])
                elif event[0] == "collected":
                    self.deliver_collected(event[1], event[2], event[3])
                elif not self.is_down(event[2]):
                    self.deliver_reply(event[1], event[2], event[3], event[4], event[5])
            self.now += 1
        raise AssertionError("the simulation did not finish")

    # -- checks ----------------------------------------------------------------------------
    def lineage(self, key: str, version: Ballot | None) -> set[Ballot | None]:
        seen: set[Ballot | None] = {None}
        while version is not None and version not in seen:
            seen.add(version)
            version = self.parent.get((key, version))
        return seen

    def violations(self) -> list[str]:
        problems = list(self.problems)
        for key, chosen in self.chosen.items():
            ordered = sorted(chosen)
            for (b1, v1), (b2, v2) in itertools.pairwise(ordered):
                if v1 not in self.lineage(key, v2):
                    problems.append(f"{key}: value chosen at {b2} ({v2}) does not descend from "
                                    f"the one chosen at {b1} ({v1})")
        done = [op for op in self.history if op.outcome == "ok"]
        for a in done:
            for b in done:
                if a.key == b.key and a.completed is not None and a.completed < b.invoked \
                        and a.version not in self.lineage(b.key, b.version):
                    problems.append(f"{a.key}: op at t={b.invoked} saw {b.version}, missing "
                                    f"{a.version} completed at t={a.completed}")
        return problems

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for op in self.history:
            counts[op.outcome] += 1
        counts["chosen"] = sum(len(c) for c in self.chosen.values())
        counts["purged"] = self.purged
        counts["fast_creates"] = self.fast_creates
        counts["settled_creates"] = self.settled_creates
        counts["fast_vote_reads"] = self.fast_vote_reads
        counts["reads_gave_up"] = self.reads_gave_up
        counts["reads_past_writes"] = self.reads_past_writes
        return dict(counts)
