"""The faults: what to break, when, for how long — and always undoing it.

A fault is applied, held, then undone; one at a time, each touching at most a minority of
the nodes, so the cluster must stay available throughout (the availability check relies on
it). The `amnesia` script is different on purpose: it is the deliberately unsafe sequence
used with `QUORUMKV_UNSAFE_VOLATILE=1` to prove the checker catches a lost write.

Every action is logged with its time since the run started, and every window of a fault is
recorded, for the summary and the availability check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Sequence

from .netfault import Partitioner
from .procs import Proc

FAULT_KINDS = ("kill", "pause", "partition", "bridge", "ring", "lossy")
# Whole-cluster power loss: kill -9 every replica at once, restart them all. Safety only —
# nothing acknowledged may be lost — so it is opt-in and never counted for availability.
EXTRA_KINDS = ("kill-all",)
NET_KINDS = frozenset({"partition", "bridge", "ring", "lossy"})  # need iptables


@dataclasses.dataclass(frozen=True)
class Window:
    """A fault held from `start` to `end` (monotonic ns)."""

    kind: str
    nodes: tuple[str, ...]
    start_ns: int
    end_ns: int


class Nemesis:
    """Drives faults on `procs` (by node id) and, when given, network cuts."""

    def __init__(
        self,
        procs: dict[str, Proc],
        partitioner: Partitioner | None,
        rng: random.Random,
        t0_ns: int,
    ) -> None:
        self.procs = procs
        self.partitioner = partitioner
        self.rng = rng
        self.t0_ns = t0_ns
        self.log: list[tuple[float, str]] = []
        self.windows: list[Window] = []
        self.counts: dict[str, int] = {}
        self.crashes: list[str] = []
        self.busy: set[str] = set()  # nodes under a fault now (several loops may run)
        self.net_busy = False  # one network fault at a time: heal() clears every cut

    def note(self, what: str) -> None:
        self.log.append(((time.monotonic_ns() - self.t0_ns) / 1e9, what))

    def kinds(self, wanted: Sequence[str]) -> list[str]:
        """The requested fault kinds we can actually inject here (a ring needs 5 nodes)."""
        return [
            k
            for k in wanted
            if k in ("kill", "pause", "kill-all")
            or (self.partitioner is not None and (k != "ring" or len(self.procs) >= 5))
        ]

    async def random_faults(
        self,
        kinds: Sequence[str],
        until_ns: int,
        hold: tuple[float, float] = (2.0, 5.0),
        quiet: tuple[float, float] = (1.0, 2.5),
    ) -> None:
        """Alternate quiet periods and one fault at a time until `until_ns`; the kinds come
        round in shuffled rounds, so a short run still injects each of them."""
        usable = self.kinds(kinds)
        ids = sorted(self.procs)
        minority = (len(ids) - 1) // 2
        bag: list[str] = []
        while time.monotonic_ns() < until_ns:
            await asyncio.sleep(self.rng.uniform(*quiet))
            left = (until_ns - time.monotonic_ns()) / 1e9
            if not usable or left < min(1.0, hold[0]) or minority == 0:
                continue
            self.find_crashes()
            if not bag:  # every kind once per round, in a random order: all get covered
                bag = self.rng.sample(usable, len(usable))
            kind = bag.pop()
            # now and then a very short fault: a restart racing its own recovery
            short = self.rng.random() < 0.2
            duration = min(self.rng.uniform(0.05, 0.5) if short else self.rng.uniform(*hold), left)
            victims = tuple(sorted(self.rng.sample(ids, self.rng.randint(1, minority))))
            if kind == "kill-all":
                victims = tuple(ids)
            await self.hold(kind, victims, duration)

    async def hold(self, kind: str, victims: tuple[str, ...], duration: float) -> None:
        """Apply one fault to `victims`, keep it `duration` seconds, undo it. Skipped when it
        would touch a node or the network that another loop is faulting right now."""
        net = kind in NET_KINDS
        if (net and self.net_busy) or self.busy & set(victims):
            return
        if kind == "kill-all" and (self.busy or self.net_busy):
            return
        self.busy |= set(victims)
        self.net_busy = self.net_busy or net
        try:
            await self._hold(kind, victims, duration)
        finally:
            self.busy -= set(victims)
            if net:
                self.net_busy = False

    async def _hold(self, kind: str, victims: tuple[str, ...], duration: float) -> None:
        start = time.monotonic_ns()
        rest = [n for n in sorted(self.procs) if n not in victims]
        try:
            if kind in ("kill", "kill-all"):
                for n in victims:
                    self.procs[n].kill()
                self.note(f"kill -9 {list(victims)}")
            elif kind == "pause":
                for n in victims:
                    self.procs[n].pause()
                self.note(f"SIGSTOP {list(victims)}")
            elif kind == "partition":
                assert self.partitioner is not None
                await asyncio.to_thread(self.partitioner.split, victims, rest)
                self.note(f"partition {list(victims)} | {rest}")
            elif kind == "lossy":
                assert self.partitioner is not None
                chance = self.rng.choice((0.1, 0.3, 0.5))
                await asyncio.to_thread(self.partitioner.lossy, chance)
                victims = ()
                self.note(f"lossy network: drop {chance:.0%} of packets between all nodes")
            elif kind == "ring":
                # Jepsen's majorities ring: each node keeps only its ring neighbours, so every
                # node sees a majority, but no two see the same one
                assert self.partitioner is not None
                ring = sorted(self.procs)
                size = len(ring)
                for i, a in enumerate(ring):
                    for j in range(i + 1, size):
                        if (j - i) % size not in (1, size - 1):
                            await asyncio.to_thread(self.partitioner.cut, a, ring[j])
                victims = ()
                self.note(f"majorities ring over {ring}")
            elif kind == "bridge":
                # cut victims from all but one of the others: that one sees both sides
                assert self.partitioner is not None
                others = rest[1:] if len(rest) > 1 else rest
                await asyncio.to_thread(self.partitioner.split, victims, others)
                self.note(f"bridge: cut {list(victims)} from {others}, {rest[0]} sees all")
            else:
                raise ValueError(f"unknown fault {kind!r}")
            self.counts[kind] = self.counts.get(kind, 0) + 1
            await asyncio.sleep(duration)
        finally:
            await self.undo(kind, victims)
            self.windows.append(Window(kind, victims, start, time.monotonic_ns()))

    async def undo(self, kind: str, victims: tuple[str, ...]) -> None:
        if kind in ("kill", "kill-all"):
            for n in victims:
                self.procs[n].start()
            self.note(f"restart {list(victims)}")
        elif kind == "pause":
            for n in victims:
                self.procs[n].resume()
            self.note(f"SIGCONT {list(victims)}")
        elif kind in NET_KINDS and self.partitioner is not None:
            await asyncio.to_thread(self.partitioner.heal)
            self.note("heal network")

    async def heal_all(self) -> None:
        """Everything back: network healed, every node resumed and running."""
        if self.partitioner is not None:
            await asyncio.to_thread(self.partitioner.heal)
        self.find_crashes()
        for n, p in sorted(self.procs.items()):
            if p.paused:
                p.resume()
            if not p.running:
                p.start()
                self.note(f"restart {n} (final heal)")
        self.note("healed")

    def find_crashes(self) -> list[str]:
        """Replicas that exited without being killed: always a server bug. Noted once each."""
        found = []
        for n, p in sorted(self.procs.items()):
            code = p.crashed
            if code is not None:
                what = f"node {n} exited by itself with code {code} (start #{p.starts})"
                if what not in self.crashes:
                    self.crashes.append(what)
                    self.note("CRASH: " + what)
                found.append(what)
        return found

    async def amnesia(self, rounds: int, hold: float = 2.0) -> None:
        """The unsafe script (3 nodes a, b, c), repeated `rounds` times:

        1. kill -9 c: writes are now acknowledged by a and b only;
        2. pause a (SIGSTOP): the newest writes now live only on a (frozen) and b;
        3. kill -9 b and restart it, then restart c: in volatile mode both come back empty
           under their old identities, and b + c are a majority that never saw any of it —
           reads through them return absent or old values, write-backs bury the newer ones;
        4. resume a.

        (Pausing c instead of killing it would not do: the messages sent to a stopped process
        wait in its socket buffers and are applied as soon as it resumes.)
        """
        ids = sorted(self.procs)
        for r in range(rounds):
            a, b, c = self.rng.sample(ids, 3)
            self.procs[c].kill()
            self.note(f"amnesia round {r}: kill -9 {c}")
            await asyncio.sleep(hold)
            self.procs[a].pause()
            self.note(f"SIGSTOP {a} (holds the newest writes with {b})")
            self.procs[b].kill()
            self.procs[b].start()
            self.procs[c].start()
            self.note(f"kill -9 + restart {b}, restart {c}: both empty, a majority")
            await asyncio.sleep(2 * hold)
            self.procs[a].resume()
            self.note(f"SIGCONT {a}")
            self.counts["amnesia"] = self.counts.get("amnesia", 0) + 1
            await asyncio.sleep(hold)
