"""The linearizability checker on hand-made histories, and a property: any history made from a
sequential execution (with overlapping intervals and indeterminate ops) is accepted.

The checker is what tells us the service is correct, so it needs proving both ways: it must
accept every legal history (no false alarms under concurrency and indeterminacy) and reject
the classic anomalies (stale read, lost write, lost CAS, values going back in time).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from jepsen import checker, model, report
from jepsen.etags import check_etags
from jepsen.history import Kind, Op, Outcome

OK, FAIL, INFO = Outcome.OK, Outcome.FAIL, Outcome.INFO
_ids = itertools.count()


def op(
    kind: Kind,
    t0: int,
    t1: int | None,
    value: str | None = None,
    *,
    outcome: Outcome = OK,
    expected: str | None = None,
    created: bool | None = None,
    process: int = 0,
    key: str = "k",
) -> Op:
    """A hand-made op; `t1=None` makes it indeterminate."""
    if t1 is None:
        outcome = INFO
    return Op(
        index=next(_ids),
        process=process,
        key=key,
        kind=kind,
        outcome=outcome,
        invoke_ns=t0,
        complete_ns=t1,
        value=value,
        expected=expected,
        created=created,
    )


def w(t0: int, t1: int | None, v: str, **kw: object) -> Op:
    return op(Kind.WRITE, t0, t1, v, **kw)  # type: ignore[arg-type]


def r(t0: int, t1: int, v: str | None, **kw: object) -> Op:
    return op(Kind.READ, t0, t1, v, **kw)  # type: ignore[arg-type]


def cas(t0: int, t1: int | None, expected: str, v: str, **kw: object) -> Op:
    return op(Kind.CAS, t0, t1, v, expected=expected, **kw)  # type: ignore[arg-type]


def valid(*ops: Op) -> bool | None:
    return checker.check(ops).valid


# --- accepted -----------------------------------------------------------------------------


def test_empty_and_sequential() -> None:
    assert valid() is True
    assert valid(r(0, 1, None), w(2, 3, "a"), r(4, 5, "a"), w(6, 7, "b"), r(8, 9, "b"))


def test_concurrent_writes_either_order() -> None:
    for seen in ("a", "b"):
        assert valid(w(0, 10, "a", process=1), w(1, 9, "b", process=2), r(11, 12, seen))


def test_read_concurrent_with_write_sees_old_or_new() -> None:
    for seen in ("a", "b"):
        assert valid(w(0, 1, "a"), w(2, 10, "b", process=1), r(3, 4, seen, process=2))


def test_info_write_took_effect_late() -> None:
    # the client gave up at once, yet the write lands long after
    assert valid(w(0, 1, "a"), w(2, None, "b"), r(3, 4, "a"), r(50, 51, "b"))


def test_info_write_never_took_effect() -> None:
    assert valid(w(0, 1, "a"), w(2, None, "b"), r(3, 4, "a"), r(100, 101, "a"))


def test_info_cas_may_or_may_not_apply() -> None:
    base = (w(0, 1, "a"), cas(2, None, "a", "b"))
    assert valid(*base, r(10, 11, "a"))
    assert valid(*base, r(10, 11, "b"))
    # ... but only if its precondition held: an indeterminate CAS from a stale value cannot
    assert not valid(w(0, 1, "a"), w(2, 3, "c"), cas(4, None, "a", "b"), r(10, 11, "b"))


def test_failed_cas_is_fine_when_value_differs() -> None:
    assert valid(w(0, 1, "a"), w(2, 3, "b"), cas(4, 5, "a", "c", outcome=FAIL), r(6, 7, "b"))


def test_failed_cas_concurrent_with_the_change() -> None:
    assert valid(w(0, 1, "a"), w(2, 10, "b", process=1), cas(3, 4, "a", "c", outcome=FAIL))


def test_create_delete_and_created_flag() -> None:
    assert valid(
        op(Kind.CREATE, 0, 1, "a"),
        op(Kind.CREATE, 2, 3, "b", outcome=FAIL),
        op(Kind.DELETE, 4, 5),
        op(Kind.DELETE, 6, 7, outcome=FAIL),  # 404: absent
        w(8, 9, "c", created=True),
        w(10, 11, "d", created=False),
        r(12, 13, "d"),
    )


def test_failed_and_info_reads_observe_nothing() -> None:
    assert valid(
        w(0, 1, "a"),
        op(Kind.READ, 2, 3, "zzz", outcome=FAIL),
        op(Kind.READ, 4, None),
        r(5, 6, "a"),
    )


def test_keys_are_independent() -> None:
    assert valid(w(0, 1, "a", key="x"), w(2, 3, "b", key="y"), r(4, 5, "a", key="x"))


# --- rejected -----------------------------------------------------------------------------


def test_stale_read() -> None:
    assert valid(w(0, 1, "a"), w(2, 3, "b"), r(4, 5, "a")) is False


def test_lost_write() -> None:
    assert valid(w(0, 1, "a"), r(2, 3, None)) is False


def test_lost_cas() -> None:
    assert valid(w(0, 1, "a"), cas(2, 3, "a", "b"), r(4, 5, "a")) is False


def test_value_goes_back_in_time_after_info_write() -> None:
    assert valid(w(0, 1, "a"), w(2, None, "b"), r(3, 4, "b"), r(5, 6, "a")) is False


def test_failed_cas_when_precondition_must_have_held() -> None:
    assert valid(w(0, 1, "a"), cas(2, 3, "a", "b", outcome=FAIL)) is False


def test_cas_applied_twice_is_caught() -> None:
    # two successful CAS from the same value: only one may win
    assert valid(w(0, 1, "a"), cas(2, 5, "a", "b"), cas(3, 6, "a", "c", process=1)) is False


def test_create_and_delete_anomalies() -> None:
    assert valid(w(0, 1, "a"), op(Kind.CREATE, 2, 3, "b")) is False
    assert valid(op(Kind.DELETE, 0, 1)) is False  # 204 on an absent key
    assert valid(w(0, 1, "a"), op(Kind.DELETE, 2, 3, outcome=FAIL)) is False
    assert valid(w(0, 1, "a"), w(2, 3, "b", created=True)) is False


def test_failure_report_names_key_and_culprit() -> None:
    hist = [
        w(0, 1, "a", key="x"),
        w(2, 3, "b", key="x"),
        r(4, 5, "b", key="x"),
        w(6, 7, "z", key="y"),
        r(8, 9, "a", key="x"),
        r(10, 11, "a", key="x"),
    ]
    result = checker.check(hist)
    assert result.valid is False
    [failure] = result.failures
    assert failure.key == "x"
    assert [o.value for o in failure.culprit] == ["a"]
    assert failure.culprit[0].invoke_ns == 8  # the first stale read, not the later one
    assert failure.possible_states == ("b",)
    text = report.format_check(result, t0=0)
    assert "'x' is NOT linearizable" in text and "!!" in text and "read -> 'a'" in text


def test_budget_exhaustion_is_unknown_not_valid() -> None:
    hist = [w(i, i + 100, f"v{i}", process=i) for i in range(12)] + [r(200, 201, "v3")]
    assert checker.check(hist, budget=5).valid is None


def test_etags_must_name_values_one_to_one() -> None:
    good = [
        dataclasses_replace(w(0, 1, "a"), etag='"1"'),
        dataclasses_replace(r(2, 3, "a"), etag='"1"'),
        dataclasses_replace(w(4, 5, "b"), etag='"2"'),
    ]
    assert check_etags(good).ok and not check_etags(good).drifting
    reused = [*good, dataclasses_replace(r(6, 7, "c"), etag='"2"')]
    assert not check_etags(reused).ok and "BUG" in check_etags(reused).describe()
    drift = [*good, dataclasses_replace(r(6, 7, "b"), etag='"3"')]
    assert check_etags(drift).ok and check_etags(drift).drifting


# --- property: sequential executions, arbitrarily stretched, are always linearizable -------


def sequential_history(rng: random.Random, n: int, spread: int, p_info: float) -> list[Op]:
    """Run random ops one after another on the model (linearization point of op i = 100·i),
    then stretch each op's interval around its point and make some mutations indeterminate
    (applied or not). Such a history is linearizable by construction."""
    state: str | None = None
    seen: list[str] = []
    out: list[Op] = []
    for i in range(n):
        point = 100 * i
        t0 = point - rng.randint(0, spread)
        t1: int | None = point + rng.randint(0, spread)
        kind = rng.choice(list(Kind))
        new = f"v{i}"
        expected = None
        if kind is Kind.CAS:
            expected = (
                state
                if (state is not None and rng.random() < 0.6)
                else (rng.choice(seen) if seen else "nope")
            )
        probe = op(kind, t0, t1, None if kind is Kind.DELETE else new, expected=expected)
        if kind is Kind.READ:
            out.append(dataclasses_replace(probe, value=state))
            continue
        ok, after = model.step(state, probe)
        if rng.random() < p_info:
            applied = ok and rng.random() < 0.5
            out.append(dataclasses_replace(probe, outcome=INFO, complete_ns=None))
            if not applied:
                continue
            state = after
        elif ok:
            created = (state is None) if kind is Kind.WRITE else None
            out.append(dataclasses_replace(probe, created=created))
            state = after
        else:
            out.append(dataclasses_replace(probe, outcome=FAIL))
        if state is not None:
            seen.append(state)
    return out


def dataclasses_replace(o: Op, **kw: object) -> Op:
    return dataclasses.replace(o, **kw)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 60),
    spread=st.integers(0, 400),
    p_info=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_sequential_histories_are_accepted(seed: int, n: int, spread: int, p_info: float) -> None:
    hist = sequential_history(random.Random(seed), n, spread, p_info)
    assert checker.check(hist).valid is True


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(2, 40))
def test_read_of_a_value_never_written_is_rejected(seed: int, n: int) -> None:
    rng = random.Random(seed)
    hist = sequential_history(rng, n, spread=150, p_info=0.2)
    hist.append(r(100 * n + 1000, 100 * n + 1001, "never-written"))
    assert checker.check(hist).valid is False


def client_history(
    rng: random.Random, clients: int, n: int, p_info: float = 0.1, key: str = "k"
) -> list[Op]:
    """Clients issue sequential ops; each op takes effect at a random instant inside its
    interval (or, if indeterminate, any time after invoke or never)."""
    specs: list[tuple[int, int, Kind, int, int | None, bool]] = []
    for c in range(clients):
        t = rng.randint(0, 50)
        for _ in range(n // clients):
            dur = rng.randint(1, 100)
            info = rng.random() < p_info
            point = t + rng.randint(0, 3000 if info else dur)  # info: may land much later
            applied = (not info) or rng.random() < 0.5
            end = None if info else t + dur
            specs.append((point, c, rng.choice(list(Kind)), t, end, applied))
            t += dur + rng.randint(0, 30)
    specs.sort()
    state: str | None = None
    seen: list[str] = []
    out: list[Op] = []
    for i, (_, c, kind, t0, t1, applied) in enumerate(specs):
        expected = None
        if kind is Kind.CAS:
            fresh = state is not None and rng.random() < 0.6
            expected = state if fresh else (rng.choice(seen) if seen else "nope")
        value = None if kind is Kind.DELETE else f"v{i}"
        probe = op(kind, t0, t1, value, expected=expected, process=c, key=key)
        if kind is Kind.READ:
            if t1 is not None:
                out.append(dataclasses_replace(probe, value=state))
            continue
        ok, after = model.step(state, probe)
        if t1 is None:
            out.append(probe)
            if ok and applied:
                state = after
        elif ok:
            created = (state is None) if kind is Kind.WRITE else None
            out.append(dataclasses_replace(probe, created=created))
            state = after
        else:
            out.append(dataclasses_replace(probe, outcome=FAIL))
        if state is not None:
            seen.append(state)
    return out


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), clients=st.integers(1, 6), p_info=st.sampled_from([0, 0.1]))
def test_client_histories_are_accepted(seed: int, clients: int, p_info: float) -> None:
    hist = client_history(random.Random(seed), clients, 120, p_info)
    assert checker.check(hist).valid is True


def test_realistic_run_checks_fast() -> None:
    """The shape of a harness run: 30 keys x 150 ops, 5 clients per key, 10 % indeterminate;
    and the same with one stale read appended to one key, which must be found."""
    rng = random.Random(7)
    hist: list[Op] = []
    for k in range(30):
        hist += client_history(rng, 5, 150, 0.1, key=f"k{k}")
    started = time.perf_counter()
    assert checker.check(hist).valid is True
    reads = [o for o in hist if o.key == "k3" and o.kind is Kind.READ and o.value is not None]
    stale = dataclasses_replace(reads[0], index=10**6, invoke_ns=10**9, complete_ns=10**9 + 1)
    result = checker.check([*hist, stale])
    assert result.valid is False
    assert [f.key for f in result.failures] == ["k3"]
    assert time.perf_counter() - started < 10
