"""Linearizability checking of a recorded history: per key, Wing-Gong search with Lowe's cache.

Pure: no I/O (it only times itself). The algorithm is the one Porcupine implements
(written here from the papers, in Python):

1. Split the history per key (linearizability is compositional, Herlihy & Wing 1990).
2. Lay the operations' call and return events on a doubly linked list in time order.
3. Depth-first: the candidates are the calls before the first pending return (an op whose
   return comes first must be linearized before anything invoked after it); take one the
   model accepts on the current state, "lift" it (remove its call and return from the
   list) and go on from the new list; when no candidate is left, backtrack.
4. Lowe's cache: never explore the same (set of linearized ops, model state) twice.

Indeterminate (`info`) operations have no return entry: they may take effect at any point
after their invocation, or never. The search succeeds once every *definite* op is placed;
an info op left over is one that never happened (or happened unobserved at the end). That
makes a subsumption rule sound and it is what keeps info-heavy histories cheap: a
configuration that applied a superset of the info ops of an already-explored configuration
with the same definite ops and the same state has no future the explored one lacked, so it
is pruned. (The cache stores, per (definite set, state), the info sets already explored.)

The search is bounded (`budget` steps per key); a key whose search runs out is reported as
unknown, never as linearizable.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence

from . import model
from .history import Kind, Op, Outcome, by_key
from .model import State

DEFAULT_BUDGET = 2_000_000


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why one key's history is not linearizable, reduced to the shortest failing prefix."""

    key: str
    culprit: tuple[Op, ...]  # definite op(s) completing at the end of the minimal prefix
    window: tuple[Op, ...]  # the ops around it that matter for reading the failure
    possible_states: tuple[State, ...] | None  # register values possible just before
    prefix_ops: int  # ops in the minimal failing prefix


@dataclasses.dataclass(frozen=True)
class KeyResult:
    key: str
    linearizable: bool | None  # None: search budget exhausted (unknown)
    ops: int  # ops that constrain the search
    info_ops: int
    steps: int
    failure: Failure | None = None


@dataclasses.dataclass(frozen=True)
class CheckResult:
    keys: tuple[KeyResult, ...]
    elapsed_s: float

    @property
    def valid(self) -> bool | None:
        """False if any key is not linearizable; None if none failed but some are unknown."""
        if any(k.linearizable is False for k in self.keys):
            return False
        if any(k.linearizable is None for k in self.keys):
            return None
        return True

    @property
    def failures(self) -> tuple[Failure, ...]:
        return tuple(k.failure for k in self.keys if k.failure is not None)


@dataclasses.dataclass(frozen=True)
class _Search:
    linearizable: bool | None
    steps: int
    final_states: frozenset[State] = frozenset()


UNREAD = "\x00<a value no read or CAS ever saw>"


def _search(ops: Sequence[Op], budget: int, *, collect: bool = False) -> _Search:
    """Wing-Gong-Lowe over one key's ops (already filtered by `model.constrains`).

    With `collect`, explore exhaustively and gather every state the register can be in once
    all definite ops are placed (for failure reports); otherwise stop at the first success.

    Two reductions keep it cheap, both exact:
    - values that no read returned and no CAS expected are indistinguishable to the model
      (each is just "present"), so they are all folded into one state, `UNREAD`;
    - once invoked, indeterminate ops with the same effect (same kind, same canonical value,
      same expected value) are interchangeable — none has a return to respect — so only the
      earliest unplaced one of each such class is a candidate. The info ops placed are then
      always the first k of their class: the cache's info sets are canonical, and with the
      subsumption rule (module docstring) info-heavy histories stay cheap;
    - definite candidates are tried before info ones, so the subsumption rule prunes early.
    """
    n = len(ops)
    observed = {op.value for op in ops if op.kind is Kind.READ} | {
        op.expected for op in ops if op.kind is Kind.CAS
    }

    def canon(s: State) -> State:
        return s if s is None or s in observed else UNREAD

    definite = [op.outcome is not Outcome.INFO for op in ops]
    klass = [
        (op.kind, None if op.kind is Kind.DELETE else canon(op.value), op.expected) for op in ops
    ]
    # bit position of each op within its class (definite / info)
    bit: list[int] = []
    nd = ni = 0
    for d in definite:
        if d:
            bit.append(1 << nd)
            nd += 1
        else:
            bit.append(1 << ni)
            ni += 1

    # events: (time, 0=call / 1=return, node). Calls sort before returns at equal times, so
    # touching intervals count as concurrent — the permissive reading.
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke_ns, 0, 2 * i))
        if definite[i]:
            assert op.complete_ns is not None, f"definite op without completion: {op}"
            events.append((op.complete_ns, 1, 2 * i + 1))
    events.sort()
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = head
    for _, _, node in events:
        nxt[last] = node
        prv[node] = last
        last = node

    def nodes(i: int) -> tuple[int, ...]:
        return (2 * i, 2 * i + 1) if definite[i] else (2 * i,)

    def lift(i: int) -> None:
        for node in nodes(i):
            p, q = prv[node], nxt[node]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(i: int) -> None:
        for node in reversed(nodes(i)):
            p, q = prv[node], nxt[node]
            nxt[p] = node
            if q != -1:
                prv[q] = node

    def candidates() -> list[int]:
        """Ops that may go next: every call before the first pending return."""
        first: list[int] = []
        then: list[int] = []
        classes = set()
        node = nxt[head]
        while node != -1 and node % 2 == 0:
            i = node // 2
            if definite[i]:
                first.append(i)
            elif klass[i] not in classes:
                classes.add(klass[i])
                then.append(i)
            node = nxt[node]
        return first + then

    cache: dict[tuple[int, State], list[int]] = {}

    def fresh(dbits: int, ibits: int, state: State) -> bool:
        """Record the configuration; False if it (or one it subsumes) was explored."""
        seen = cache.setdefault((dbits, state), [])
        for prev in seen:
            if prev & ~ibits == 0:  # prev ⊆ ibits: we have no future prev lacked
                return False
        seen.append(ibits)
        return True

    state: State = model.INITIAL
    dbits = ibits = 0
    left = nd
    stack: list[tuple[int, State, list[int], int]] = []
    finals: set[State] = set()
    fresh(0, 0, state)
    cands = candidates()
    pos = 0
    steps = 0
    while True:
        steps += 1
        if steps > budget:
            return _Search(None, steps, frozenset(finals))
        if left == 0:
            if not collect:
                return _Search(True, steps)
            finals.add(state)
        if pos < len(cands):
            i = cands[pos]
            pos += 1
            ok, new_state = model.step(state, ops[i])
            if not ok:
                continue
            new_state = canon(new_state)
            nd_bits = dbits | bit[i] if definite[i] else dbits
            ni_bits = ibits if definite[i] else ibits | bit[i]
            if fresh(nd_bits, ni_bits, new_state):
                stack.append((i, state, cands, pos))
                state, dbits, ibits = new_state, nd_bits, ni_bits
                if definite[i]:
                    left -= 1
                lift(i)
                cands = candidates()
                pos = 0
            continue
        # every candidate tried: backtrack
        if not stack:
            if collect:
                return _Search(bool(finals), steps, frozenset(finals))
            return _Search(False, steps)
        i, state, cands, pos = stack.pop()
        if definite[i]:
            dbits &= ~bit[i]
            left += 1
        else:
            ibits &= ~bit[i]
        unlift(i)


def _prefix(ops: Sequence[Op], t: int) -> list[Op]:
    """The history as it looked at instant `t`: ops invoked later vanish; mutations still
    running become indeterminate; reads still running observed nothing yet."""
    out: list[Op] = []
    for op in ops:
        if op.invoke_ns > t:
            continue
        if op.complete_ns is not None and op.complete_ns <= t:
            out.append(op)
        elif op.is_mutation:
            later = f"pending here; later {op.outcome.value} {op.detail}".rstrip()
            out.append(
                dataclasses.replace(op, outcome=Outcome.INFO, complete_ns=None, detail=later)
            )
    return out


def _explain(key: str, ops: Sequence[Op], budget: int) -> Failure | None:
    """Shrink a failing key history to its shortest non-linearizable prefix (linearizability
    is prefix-closed, so a binary search over completion instants finds it) and describe it."""
    ends = sorted({op.complete_ns for op in ops if op.complete_ns is not None})
    lo, hi = 0, len(ends) - 1
    if _search(_prefix(ops, ends[hi]), budget).linearizable is not False:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _search(_prefix(ops, ends[mid]), budget).linearizable is False:
            hi = mid
        else:
            lo = mid + 1
    t = ends[lo]
    prefix = _prefix(ops, t)
    culprit = tuple(op for op in prefix if op.complete_ns == t)
    before = [op for op in prefix if op not in culprit]
    # states possible just before the culprit(s) completed, placing everything else first
    states = _search(before, budget, collect=True)
    possible = tuple(sorted(states.final_states, key=lambda s: (s is not None, s or "")))
    start = min(op.invoke_ns for op in culprit)
    overlapping = [op for op in prefix if op.complete_ns is None or op.complete_ns >= start]
    earlier_writes = [
        op
        for op in prefix
        if op.is_mutation
        and op.complete_ns is not None
        and op.complete_ns < start
        and op.outcome is not Outcome.FAIL
    ][-5:]
    window = sorted(set(overlapping) | set(earlier_writes), key=lambda op: op.invoke_ns)
    return Failure(
        key=key,
        culprit=culprit,
        window=tuple(window[-40:]),
        possible_states=possible if states.linearizable is not None else None,
        prefix_ops=len(prefix),
    )


def check_key(key: str, ops: Iterable[Op], budget: int = DEFAULT_BUDGET) -> KeyResult:
    """Check one key's sub-history."""
    kept = sorted((op for op in ops if model.constrains(op)), key=lambda op: op.invoke_ns)
    info = sum(op.outcome is Outcome.INFO for op in kept)
    found = _search(kept, budget)
    failure = _explain(key, kept, budget) if found.linearizable is False else None
    return KeyResult(key, found.linearizable, len(kept), info, found.steps, failure)


def check(ops: Iterable[Op], budget: int = DEFAULT_BUDGET) -> CheckResult:
    """Check a whole history (any number of keys)."""
    started = time.perf_counter()
    results = tuple(check_key(key, key_ops, budget) for key, key_ops in sorted(by_key(ops).items()))
    return CheckResult(results, time.perf_counter() - started)
