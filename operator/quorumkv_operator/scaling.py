"""Scaling decisions (pure). Until safe membership change (issue #5) exists, refuse.

The membership of a running cluster is what its replicas were started with: the
StatefulSet's replica count (its peer list has that many entries). Changing it without
joint quorums can lose acknowledged writes, so a different `spec.replicas` is refused: the
StatefulSet keeps its size and a `ScalingBlocked` condition plus a Warning event say why.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ScalingDecision:
    members: int
    """The replica count the operator will run (the StatefulSet's `spec.replicas`)."""
    blocked: bool
    """True when `spec.replicas` asks for a membership change that is refused."""
    message: str = ""


def decide(
    *, requested: int, current_members: int | None, recorded_members: int | None = None,
) -> ScalingDecision:
    """`current_members`: the existing StatefulSet's replicas (None if it does not exist).
    `recorded_members`: `status.replicas` from an earlier reconcile, which stands in for a
    StatefulSet that someone deleted (its PVCs still hold that membership's data)."""
    existing = current_members if current_members is not None else recorded_members
    if not existing or existing == requested:
        return ScalingDecision(members=requested, blocked=False)
    return ScalingDecision(
        members=existing,
        blocked=True,
        message=(
            f"spec.replicas={requested} but the cluster runs {existing} members; changing "
            f"membership safely needs joint quorums, which this operator version does not do "
            f"yet. Keeping {existing} replicas; set spec.replicas back to {existing} to clear."
        ),
    )
