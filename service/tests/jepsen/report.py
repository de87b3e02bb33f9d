"""Human-readable text for check results and run summaries. Pure: strings in, strings out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .checker import UNREAD, CheckResult, Failure
from .history import Op
from .model import State


def _t(ns: int | None, t0: int) -> str:
    return "      ∞" if ns is None else f"{(ns - t0) / 1e9:7.3f}"


def format_op(op: Op, t0: int) -> str:
    """`[  1.234,   1.240] #17 c3 write 'v' ok (201) via n1`, times in seconds from t0."""
    return f"[{_t(op.invoke_ns, t0)}, {_t(op.complete_ns, t0)}] #{op.index} {op.describe()}"


def _state(s: State) -> str:
    return "<a value nobody read>" if s == UNREAD else repr(s)


def format_failure(failure: Failure, t0: int) -> str:
    """Explain one key's violation: the op that cannot be explained, and what surrounds it."""
    lines = [
        f"key {failure.key!r} is NOT linearizable; shortest failing prefix: "
        f"{failure.prefix_ops} ops, ending when this completed:",
    ]
    lines += ["  !! " + format_op(op, t0) for op in failure.culprit]
    if failure.possible_states is not None:
        shown = ", ".join(_state(s) for s in failure.possible_states[:10])
        more = " …" if len(failure.possible_states) > 10 else ""
        lines.append(f"  the register could only hold: {{{shown}{more}}} (None = absent)")
    lines.append("  ops around it (∞ = indeterminate, may take effect any time later):")
    marks = set(failure.culprit)
    lines += [("  !! " if op in marks else "     ") + format_op(op, t0) for op in failure.window]
    return "\n".join(lines)


def format_check(result: CheckResult, t0: int) -> str:
    """A verdict line per outcome plus every failure explained."""
    unknown = [k.key for k in result.keys if k.linearizable is None]
    ops = sum(k.ops for k in result.keys)
    info = sum(k.info_ops for k in result.keys)
    steps = sum(k.steps for k in result.keys)
    verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown"}[result.valid]
    lines = [
        f"checker: {verdict}: {len(result.keys)} keys, {ops} ops ({info} indeterminate), "
        f"{steps} search steps, {result.elapsed_s:.2f} s"
    ]
    if unknown:
        lines.append(f"  search budget exhausted on keys: {unknown}")
    lines += [format_failure(f, t0) for f in result.failures]
    return "\n".join(lines)


def op_table(ops: Iterable[Op]) -> str:
    """Counts of ops by kind and outcome, e.g. `write ok=120 fail=0 info=7`."""
    counts = Counter((op.kind.value, op.outcome.value) for op in ops)
    kinds = sorted({k for k, _ in counts})
    return "\n".join(
        f"  {k:<7} " + " ".join(f"{o}={counts[(k, o)]}" for o in ("ok", "fail", "info"))
        for k in kinds
    )


def format_faults(faults: Sequence[tuple[float, str]]) -> str:
    """The nemesis log: one `t=12.3s kill n1` line per action."""
    return "\n".join(f"  t={t:6.2f}s {what}" for t, what in faults)
