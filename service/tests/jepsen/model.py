"""The sequential specification of one key: a register holding a value, or absent.

Pure. `step` says whether an operation, applied atomically to a state, could have produced
what the client observed, and the state after it. Because written values are unique, the
state is just the value (None = absent) and a CAS is "current value == the value whose ETag
the client sent".

What each outcome means here:
- ok read: the state equals the value returned (None for 404);
- ok write: always possible; if the client saw 201 / 200 the key must have been absent /
  present;
- ok delete (204): the key was present; fail delete (404): it was absent;
- ok cas: the state was `expected`; fail cas (412): it was not — nothing changed;
- ok create: it was absent; fail create (412): it was present — nothing changed;
- info mutation: if it happened at all it behaved like the ok op (an indeterminate CAS or
  create that hit a failed precondition is the same as one that never happened, which the
  checker allows by never having to place an info op).
"""

from __future__ import annotations

from .history import Kind, Op, Outcome

State = str | None
INITIAL: State = None


def step(state: State, op: Op) -> tuple[bool, State]:
    """(could `op` have happened atomically on `state` as observed?, state after it)."""
    kind, outcome = op.kind, op.outcome
    if kind is Kind.READ:
        return state == op.value, state
    if outcome is Outcome.FAIL:
        if kind is Kind.DELETE:
            return state is None, state
        if kind is Kind.CAS:
            return state != op.expected, state
        if kind is Kind.CREATE:
            return state is not None, state
        return True, state  # a refused write (400/413) observed nothing
    # ok, or info taken to have happened
    if kind is Kind.WRITE:
        if op.created is not None and outcome is Outcome.OK and op.created != (state is None):
            return False, state
        return True, op.value
    if kind is Kind.DELETE:
        if outcome is Outcome.OK and state is None:
            return False, state
        return True, None
    if kind is Kind.CAS:
        return state == op.expected, op.value if state == op.expected else state
    if kind is Kind.CREATE:
        return state is None, op.value if state is None else state
    raise ValueError(f"unknown operation kind {kind!r}")


def constrains(op: Op) -> bool:
    """Whether an operation tells the checker anything.

    A read that failed or timed out observed nothing and changed nothing; a fail write (400,
    413) changed nothing. Every other op is kept.
    """
    if op.kind is Kind.READ:
        return op.outcome is Outcome.OK
    return not (op.kind is Kind.WRITE and op.outcome is Outcome.FAIL)
