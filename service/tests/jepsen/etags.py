"""ETag sanity, beside linearizability: versions must name values one-to-one.

Pure. The model ignores ETags (it checks CAS on the values they stand for), so this catches
what it cannot:
- one ETag returned with two different values: two writes given the same version, so an
  If-Match meant for one would apply over the other — always a bug;
- one value seen under several ETags: its version changed although nobody wrote (e.g. a
  read repair minting a new version); a client holding the older ETag then gets a 412 for a
  value that did not change. Reported as a warning: it is allowed by the checker's model,
  but it breaks the If-Match contract users rely on.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable

from .history import Kind, Op, Outcome


@dataclasses.dataclass(frozen=True)
class EtagReport:
    shared: dict[tuple[str, str], frozenset[str]]  # (key, etag) -> several values
    drifting: dict[tuple[str, str], frozenset[str]]  # (key, value) -> several etags

    @property
    def ok(self) -> bool:
        return not self.shared

    def describe(self, limit: int = 5) -> str:
        lines = []
        for (key, etag), values in list(self.shared.items())[:limit]:
            lines.append(f"  BUG: key {key!r} etag {etag} named values {sorted(values)}")
        if self.drifting:
            lines.append(f"  {len(self.drifting)} values were seen under more than one etag, e.g.:")
            for (key, value), etags in list(self.drifting.items())[:limit]:
                lines.append(f"    key {key!r} value {value!r}: etags {sorted(etags)}")
        return "\n".join(lines) or "  etags: one per value, one value per etag"


def check_etags(ops: Iterable[Op]) -> EtagReport:
    values_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    etags_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for op in ops:
        if op.outcome is not Outcome.OK or op.etag is None or op.value is None:
            continue
        if op.kind is Kind.DELETE:
            continue
        values_of[(op.key, op.etag)].add(op.value)
        etags_of[(op.key, op.value)].add(op.etag)
    return EtagReport(
        shared={k: frozenset(v) for k, v in values_of.items() if len(v) > 1},
        drifting={k: frozenset(v) for k, v in etags_of.items() if len(v) > 1},
    )
