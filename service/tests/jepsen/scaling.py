"""The membership nemesis: change the member set (e.g. 3→5→3→1→3) while crashing and pausing.

Two kinds of actors share one `Nemesis` (its log, windows, counts and `busy` set):

- the *driver* walks the plan of member sets, one change at a time, through the replicas'
  admin API (`quorumkv.client.Client.change_membership`, then polling `membership()` until
  the change is `done`). It asks a replica that stays a member (in both the old and the new
  set) and not under a fault; if that replica dies, stays silent, or reports `failed`, it
  asks another one (or the same one once restarted) — the way the operator resumes a change;
- the *fault loops* kill -9 + restart and SIGSTOP + SIGCONT replicas, members or not, but
  only sets of nodes whose loss keeps a majority of every configuration that matters up: the
  current member set and, from the moment the driver announces the next change until it is
  done, the target set too (joint consensus needs a majority of both). The driver waits for
  faults that would break the target's majority to end before it starts the change.

A killed replica counts as down until its `/healthz` answers again after the restart, so a
quick restart racing the next fault does not leave a set without its majority.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Collection, Iterable, Mapping, Sequence

import aiohttp
from quorumkv.client import Client, QuorumKVError

from .nemesis import Nemesis
from .procs import Proc, wait_http
from .workload import new_session

MemberSet = frozenset[str]

# 3→5→3→1→3 over nodes 0..4 (0, 1, 2 bootstrap; 3, 4 join later)
DEFAULT_PLAN: tuple[tuple[str, ...], ...] = (
    ("0", "1", "2", "3", "4"),
    ("0", "1", "2"),
    ("0",),
    ("0", "1", "2"),
)


def tolerates(members: Collection[str], down: Collection[str]) -> bool:
    """Whether a majority of `members` is still up with `down` lost."""
    up = len(set(members) - set(down))
    return 2 * up > len(members)


def tolerated_by_all(sets: Iterable[Collection[str]], down: Collection[str]) -> bool:
    return all(tolerates(s, down) for s in sets)


def safe_victims(
    rng: random.Random,
    nodes: Sequence[str],
    busy: Collection[str],
    sets: Sequence[Collection[str]],
    most: int,
    tries: int = 20,
) -> tuple[str, ...]:
    """A random set of 1..`most` idle nodes whose loss, on top of `busy`, every set in `sets`
    tolerates; () when there is none (after `tries` random draws)."""
    idle = [n for n in nodes if n not in busy]
    for _ in range(tries):
        if not idle:
            return ()
        size = rng.randint(1, min(most, len(idle)))
        victims = tuple(sorted(rng.sample(idle, size)))
        if tolerated_by_all(sets, {*busy, *victims}):
            return victims
    return ()


@dataclasses.dataclass
class ChangeRecord:
    """One membership change as the driver saw it (times in seconds since the run started)."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    announced_s: float  # target set known to the fault loops
    started_s: float = 0.0  # first request accepted
    finished_s: float | None = None
    state: str = "pending"  # done | timeout | pending
    drivers: list[str] = dataclasses.field(default_factory=list)  # every replica asked
    requests: int = 0
    refusals: list[str] = dataclasses.field(default_factory=list)
    faults_during: int = 0
    epoch: int | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_s is None else self.finished_s - self.started_s

    def describe(self) -> str:
        took = "—" if self.duration_s is None else f"{self.duration_s:.1f} s"
        extra = f", refused/failed: {self.refusals[:3]}" if self.refusals else ""
        return (
            f"{len(self.old)}→{len(self.new)} {list(self.old)} → {list(self.new)}: {self.state}"
            f" in {took} (at t={self.started_s:.1f}s, epoch {self.epoch}, drivers "
            f"{self.drivers}, {self.requests} requests, {self.faults_during} faults during"
            f"{extra})"
        )


class MembershipNemesis(Nemesis):
    def __init__(
        self,
        procs: dict[str, Proc],
        urls: Mapping[str, str],
        members: Iterable[str],
        rng: random.Random,
        t0_ns: int,
        *,
        change_timeout_s: float = 40.0,
        silent_driver_s: float = 3.0,
        restart_wait_s: float = 20.0,
    ) -> None:
        super().__init__(procs, None, rng, t0_ns)
        self.urls = dict(urls)
        self.members: MemberSet = frozenset(members)
        self.target: MemberSet | None = None
        self.changes: list[ChangeRecord] = []
        self.change_timeout_s = change_timeout_s
        self.silent_driver_s = silent_driver_s
        self.restart_wait_s = restart_wait_s
        self.starting: set[str] = set()  # restarted, not answering /healthz yet
        self.strikes: list[asyncio.Task[None]] = []

    # --- which faults are allowed ---------------------------------------------------------

    def constraint_sets(self) -> list[MemberSet]:
        return [self.members] if self.target is None else [self.members, self.target]

    def down(self) -> set[str]:
        return self.busy | self.starting

    async def undo(self, kind: str, victims: tuple[str, ...]) -> None:
        """As `Nemesis.undo`, but a restarted node stays counted as down (it is in `busy`
        until this returns) until it answers /healthz again."""
        await super().undo(kind, victims)
        if kind == "kill" and victims:
            async with new_session() as session:
                ok = await wait_http(
                    session,
                    [self.urls[n] + "/healthz" for n in victims],
                    timeout=self.restart_wait_s,
                )
            if not ok:
                self.note(f"restarted {list(victims)} not answering /healthz in time")

    async def fault_loop(
        self,
        until_ns: int,
        kinds: Sequence[str] = ("kill", "pause"),
        hold: tuple[float, float] = (1.0, 4.0),
        quiet: tuple[float, float] = (0.5, 2.0),
        most: int = 2,
    ) -> None:
        """Until `until_ns`: a quiet period, then one fault on nodes the configurations that
        matter can all lose (together with what other loops hold down right now)."""
        ids = sorted(self.procs)
        while time.monotonic_ns() < until_ns:
            await asyncio.sleep(self.rng.uniform(*quiet))
            left = (until_ns - time.monotonic_ns()) / 1e9
            if left < 0.5:
                break
            self.find_crashes()
            victims = safe_victims(self.rng, ids, self.down(), self.constraint_sets(), most)
            if not victims:
                continue
            kind = self.rng.choice(list(kinds))
            short = self.rng.random() < 0.2
            duration = min(self.rng.uniform(0.05, 0.5) if short else self.rng.uniform(*hold), left)
            for change in self.changes:
                if change.state == "pending":
                    change.faults_during += 1
            # no await between choosing and `hold` claiming them in `busy`: atomic
            await self.hold(kind, victims, duration)

    # --- the membership changes --------------------------------------------------------

    def _now(self) -> float:
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def _eligible_drivers(self, target: MemberSet) -> list[str]:
        both = sorted(self.members & target)
        up = [n for n in both if n not in self.down()]
        return up or both

    async def drive(
        self, plan: Sequence[Sequence[str]], until_ns: int, min_gap_s: float = 2.0
    ) -> None:
        """Make each change of `plan` in turn, spread over the run up to `until_ns` (each
        starts no earlier than its slot and no sooner than `min_gap_s` after the previous)."""
        start = time.monotonic_ns()
        slot = (until_ns - start) / 1e9 / (len(plan) + 1)
        for i, members in enumerate(plan):
            due = start + int((i + 1) * slot * 1e9)
            await asyncio.sleep(max(min_gap_s, (due - time.monotonic_ns()) / 1e9))
            record = await self.change(frozenset(members))
            if record.state != "done":
                self.note(f"membership change to {sorted(members)} NOT done: {record.state}")
                break  # the rest of the plan assumes it happened
        await asyncio.gather(*self.strikes)

    async def _strike(self, record: ChangeRecord) -> None:
        """One fault right after the change is asked for: a change on a few hundred keys takes
        well under a second, so the fault loops alone would rarely catch one in the act. The
        driver itself may be the victim (then the change is resumed through another member)."""
        await asyncio.sleep(self.rng.uniform(0.0, 0.15))
        if record.state != "pending":
            return
        ids = sorted(self.procs)
        victims = safe_victims(self.rng, ids, self.down(), self.constraint_sets(), most=2)
        if victims:
            record.faults_during += 1
            kind = self.rng.choice(("kill", "pause"))
            self.note(f"membership: strike during the change: {kind} {list(victims)}")
            await self.hold(kind, victims, self.rng.uniform(0.5, 2.5))

    async def change(self, target: MemberSet) -> ChangeRecord:
        """Announce `target`, wait for the faults to fit it, then make the change (bounded)."""
        record = ChangeRecord(tuple(sorted(self.members)), tuple(sorted(target)), self._now())
        self.changes.append(record)
        self.target = target
        self.note(f"membership: announce {sorted(self.members)} → {sorted(target)}")
        deadline = time.monotonic() + self.change_timeout_s
        while not tolerated_by_all(self.constraint_sets(), self.down()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        record.started_s = self._now()
        spec = {n: self.urls[n] for n in sorted(target)}
        self.strikes.append(asyncio.create_task(self._strike(record)))
        try:
            await self._until_done(record, spec, deadline)
        finally:
            record.finished_s = self._now()
            if record.state == "done":
                self.members = target
                self.counts["membership"] = self.counts.get("membership", 0) + 1
            elif record.state == "pending":
                record.state = "timeout"
            self.target = None
            self.note(f"membership: {record.describe()}")
        return record

    async def _until_done(
        self, record: ChangeRecord, spec: dict[str, str], deadline: float
    ) -> None:
        target = frozenset(spec)
        driver: str | None = None
        last_heard = time.monotonic()
        need_request = True
        while time.monotonic() < deadline:
            if driver is None or (
                time.monotonic() - last_heard > self.silent_driver_s
                or not self.procs[driver].running
            ):
                eligible = self._eligible_drivers(target)
                others = [n for n in eligible if n != driver] or eligible
                if driver is not None:
                    self.note(f"membership: driver {driver} silent or down, switching")
                driver = self.rng.choice(others)
                need_request, last_heard = True, time.monotonic()
            async with Client(self.urls[driver], timeout=2.0) as client:
                try:
                    if need_request:
                        record.requests += 1
                        if driver not in record.drivers:
                            record.drivers.append(driver)
                        self.note(f"membership: ask {driver} for {sorted(target)}")
                        await client.change_membership(spec)
                        need_request = False
                        last_heard = time.monotonic()
                    view = await client.membership()
                    last_heard = time.monotonic()
                except QuorumKVError as exc:  # 409: e.g. this one is behind; ask another
                    record.refusals.append(f"{driver}: {exc}")
                    driver = None
                    await asyncio.sleep(0.3)
                    continue
                except (TimeoutError, OSError, aiohttp.ClientError):  # down or paused
                    await asyncio.sleep(0.2)
                    continue
            progress = view.get("change") or {}
            if sorted(progress.get("target") or {}) != sorted(target):
                need_request = True  # restarted: it forgot the change; ask it again
            elif progress.get("state") == "done":
                record.state, record.epoch = "done", int(progress.get("epoch") or 0)
                return
            elif progress.get("state") == "failed":
                record.refusals.append(f"{driver}: failed: {progress.get('error')}")
                driver = None
            await asyncio.sleep(0.2)
