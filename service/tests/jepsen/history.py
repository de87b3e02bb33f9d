"""Operation records of a concurrent history, as the clients observed them.

Pure data. Every operation carries its invocation and completion instants (monotonic
nanoseconds of one process, so they are comparable across clients) and an outcome that says
how much we know about it:

- ``ok``   — it took effect, exactly once, somewhere between invocation and completion;
- ``fail`` — it definitely did not change anything; for a 404 / 412 the response still tells
  us something about the state at some instant inside the interval (see `model`);
- ``info`` — indeterminate (503, timeout, connection cut): it may have taken effect at any
  instant after its invocation — even long after the client gave up — or never.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable


class Kind(enum.StrEnum):
    """What the client asked for."""

    READ = "read"  # GET; `value` is what it returned (None: 404, absent)
    WRITE = "write"  # unconditional PUT of `value`
    DELETE = "delete"  # DELETE
    CAS = "cas"  # PUT If-Match <etag of a read that returned `expected`> with `value`
    CREATE = "create"  # PUT If-None-Match: * with `value`


class Outcome(enum.StrEnum):
    """How much the client knows about whether the operation happened."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


MUTATIONS = frozenset({Kind.WRITE, Kind.DELETE, Kind.CAS, Kind.CREATE})


@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One completed (or abandoned) client operation on one key.

    Values are strings and every written value is unique in a run, so the register's value
    identifies the write that produced it; that is what lets a CAS be modelled on values
    (`expected`) instead of on server-chosen ETags we may never have seen.
    """

    index: int  # position in the recorded history (stable id for reports)
    process: int  # client id
    key: str
    kind: Kind
    outcome: Outcome
    invoke_ns: int
    complete_ns: int | None  # None for INFO: it may still be in flight
    value: str | None = None  # written value, or the value a read returned
    expected: str | None = None  # CAS: the value whose ETag was sent in If-Match
    created: bool | None = None  # ok PUT: 201 (True) / 200 (False); None: not observed
    etag: str | None = None  # ETag returned (diagnostics only; never used by the model)
    gave_up_ns: int | None = None  # INFO: when the client stopped waiting (diagnostics)
    node: str = ""  # which replica the client talked to (diagnostics)
    detail: str = ""  # status code or error text (diagnostics)

    @property
    def is_mutation(self) -> bool:
        return self.kind in MUTATIONS

    def describe(self) -> str:
        """One line: `c3 write 'v' ok (201) via n1`."""
        if self.kind is Kind.READ:
            what = f"read -> {self.value!r}" if self.outcome is Outcome.OK else "read"
        elif self.kind is Kind.CAS:
            what = f"cas {self.expected!r} -> {self.value!r}"
        elif self.kind is Kind.DELETE:
            what = "delete"
        else:
            what = f"{self.kind.value} {self.value!r}"
        extra = f" ({self.detail})" if self.detail else ""
        via = f" via {self.node}" if self.node else ""
        return f"c{self.process} {what} {self.outcome.value}{extra}{via}"


def by_key(ops: Iterable[Op]) -> dict[str, list[Op]]:
    """Split a history per key: linearizability is compositional (P-compositionality), so
    each key's sub-history can be checked on its own — and the search stays small."""
    out: dict[str, list[Op]] = {}
    for op in ops:
        out.setdefault(op.key, []).append(op)
    return out
