"""One Jepsen-style run: replicas up, clients + nemesis for a while, heal, final reads, check.

Everything is bounded in time (the run's duration, readiness waits, final reads) and torn down
however the run ends: processes stopped (paused ones resumed first), the iptables chain
deleted. The history and summary are written next to the replicas' logs in `workdir`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from pathlib import Path

from . import checker, report
from .checker import CheckResult
from .etags import EtagReport, check_etags
from .history import Op, Outcome
from .nemesis import FAULT_KINDS, NET_KINDS, Nemesis, Window
from .netfault import Partitioner, iptables_usable
from .procs import NodeAddr, Proc, ProcGroup, free_port, loopback_nodes, wait_http
from .scaling import ChangeRecord, MembershipNemesis
from .workload import Client, KeyGroup, Mix, Recorder, final_reads, new_session

# `register.format_etag` of an `inner_version`: "counter.boot.node" with a negative boot
INNER_ETAG = re.compile(r'"\d+\.-\d+\.')


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What one run does. `from_env` lets a longer or differently seeded run be asked for
    without editing the test (QKV_JEPSEN_DURATION=600 QKV_JEPSEN_SEED=7 …)."""

    workdir: Path
    seed: int = 1
    replicas: int = 3
    duration_s: float = 60.0  # of the workload with faults
    clients: int = 12
    clients_per_key: int = 4  # at most 8-10: the search cost grows fast with it
    ops_per_key: int = 150  # then the key's group moves to a fresh key
    op_timeout_s: float = 2.5  # client side; past it an op is indeterminate
    faults: tuple[str, ...] = FAULT_KINDS  # for the random nemesis
    amnesia_rounds: int = 0  # > 0: run the unsafe amnesia script instead
    nemesis_loops: int = 1  # > 1: overlapping faults, a majority may go down (safety only)
    amnesia_hold_s: float = 2.0  # length of each phase of that script
    mix: Mix = dataclasses.field(default_factory=Mix)  # weights of the op kinds
    volatile: bool = False  # QUORUMKV_UNSAFE_VOLATILE=1 on the replicas
    # tombstones are collected this long after a delete (production default 60 s): short, so
    # that collection runs all the time, under every fault, on keys still in use
    tombstone_ttl_s: float = 0.5
    first_host: int = 2  # replicas on 127.0.0.<first_host>…
    ready_timeout_s: float = 30.0
    check_budget: int = checker.DEFAULT_BUDGET  # search steps per key
    snapshot_server: bool = True  # run the replicas from a copy of the package (see below)
    server_source: str = "worktree"  # or "head": the package as committed
    # Membership changes (see `scaling`): the first `replicas - joiners` replicas bootstrap the
    # cluster, the others start as non-members (--advertise-url) and join when a change of
    # `membership_plan` adds them; kill and pause faults then respect every majority involved.
    joiners: int = 0
    membership_plan: tuple[tuple[str, ...], ...] = ()
    change_timeout_s: float = 40.0

    @classmethod
    def from_env(cls, workdir: Path, **defaults: object) -> RunConfig:
        env = os.environ
        base = cls(workdir=workdir, **defaults)  # type: ignore[arg-type]
        faults = env.get("QKV_JEPSEN_FAULTS")
        return dataclasses.replace(
            base,
            seed=int(env.get("QKV_JEPSEN_SEED", base.seed)),
            duration_s=float(env.get("QKV_JEPSEN_DURATION", base.duration_s)),
            clients=int(env.get("QKV_JEPSEN_CLIENTS", base.clients)),
            clients_per_key=int(env.get("QKV_JEPSEN_CLIENTS_PER_KEY", base.clients_per_key)),
            replicas=int(env.get("QKV_JEPSEN_REPLICAS", base.replicas)),
            server_source=env.get("QKV_JEPSEN_SERVER", base.server_source),
            nemesis_loops=int(env.get("QKV_JEPSEN_NEMESIS_LOOPS", base.nemesis_loops)),
            faults=tuple(f for f in faults.split(",") if f) if faults else base.faults,
        )


@dataclasses.dataclass
class RunResult:
    config: RunConfig
    ops: list[Op]
    check: CheckResult
    t0_ns: int
    fault_log: list[tuple[float, str]]
    fault_counts: dict[str, int]
    windows: list[Window]
    partitions_enabled: bool
    final_read_ok: dict[str, bool]
    unsent: Counter[str]
    unexpected: Counter[str]
    run_s: float
    crashes: list[str]  # replicas that exited without being killed: server bugs
    etags: EtagReport
    errors: list[str]  # of the harness itself (nemesis or clients): the run is suspect
    ready_after_heal: bool
    changes: list[ChangeRecord] = dataclasses.field(default_factory=list)
    final_members: tuple[str, ...] = ()
    tombstones_collected: int = 0

    @property
    def ok_ops(self) -> int:
        return sum(op.outcome is Outcome.OK for op in self.ops)

    @property
    def inner_versions(self) -> int:
        """Operations told the version of a state inside a batch (`core.changes.Batch`): a
        later change of the same round overwrote it. Shows that batches were checked."""
        return sum(op.outcome is Outcome.OK and op.etag is not None
                   and INNER_ETAG.match(op.etag) is not None for op in self.ops)

    def availability(self) -> list[tuple[Window, int, int]]:
        """Per fault window: (window, ops sent to unaffected nodes while it lasted, how many
        of them got a definite answer). With only a minority faulty, the healthy nodes must
        keep answering; ops to the faulty ones are expected to hang or fail."""
        out = []
        for w in self.windows:
            affected = () if w.kind == "bridge" else w.nodes  # a bridge leaves all a majority
            sent = [
                op
                for op in self.ops
                if op.process >= 0
                and op.node not in affected
                and w.start_ns <= op.invoke_ns <= w.end_ns
            ]
            out.append((w, len(sent), sum(op.outcome is not Outcome.INFO for op in sent)))
        return out

    def throughput_by_phase(self) -> list[str]:
        """ok ops/s between and during the membership changes (clients' ops only)."""
        marks: list[tuple[float, str]] = [(0.0, "start")]
        for c in self.changes:
            marks.append((c.started_s, f"change to {len(c.new)}"))
            if c.finished_s is not None:
                marks.append((c.finished_s, f"{len(c.new)} members"))
        ends = [m[0] for m in marks[1:]] + [self.config.duration_s]
        out = []
        for (start, what), end in zip(marks, ends, strict=True):
            if end <= start:
                continue
            ok = sum(
                op.outcome is Outcome.OK
                and op.process >= 0
                and start <= (op.invoke_ns - self.t0_ns) / 1e9 < end
                for op in self.ops
            )
            rate = ok / (end - start)
            out.append(f"{what:>14} t={start:5.1f}..{end:5.1f}s: {rate:6.1f} ok ops/s")
        return out

    def summary(self) -> str:
        cfg = self.config
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.fault_counts.items())) or "none"
        if cfg.membership_plan:
            net = f"membership plan {[len(m) for m in cfg.membership_plan]}, {cfg.joiners} joiners"
        else:
            net = f"partitions={'on' if self.partitions_enabled else 'OFF (no iptables)'}"
        lines = [
            f"jepsen run: seed={cfg.seed} replicas={cfg.replicas} clients={cfg.clients} "
            f"duration={cfg.duration_s:.0f}s volatile={cfg.volatile} {net}",
            f"ops: {len(self.ops)} recorded, {self.ok_ops} ok, over {self.run_s:.1f} s; "
            f"unsent (connection refused): {sum(self.unsent.values())}",
            report.op_table(self.ops),
            f"faults injected: {faults}",
            f"tombstones collected by every voter: {self.tombstones_collected} "
            f"(ttl {cfg.tombstone_ttl_s} s)",
            f"operations told a version inside a batch of changes: {self.inner_versions}",
        ]
        if self.errors:
            lines.append(f"HARNESS ERRORS: {self.errors}")
        if self.crashes:
            lines.append(f"REPLICA CRASHES: {self.crashes}")
        if not self.ready_after_heal:
            lines.append("NOT all replicas ready again after healing")
        if self.unexpected:
            lines.append(f"unexpected statuses (counted indeterminate): {dict(self.unexpected)}")
        if cfg.membership_plan:
            lines.append(f"membership changes (final members {list(self.final_members)}):")
            lines += ["  " + c.describe() for c in self.changes]
            lines += ["  " + line for line in self.throughput_by_phase()]
        lost = [k for k, ok in self.final_read_ok.items() if not ok]
        if lost:
            lines.append(f"final reads failed for keys: {lost}")
        lines.append(report.format_faults(self.fault_log))
        for w, sent, answered in [] if cfg.membership_plan else self.availability():
            lines.append(
                f"  during {w.kind} {list(w.nodes)} ({(w.end_ns - w.start_ns) / 1e9:.1f} s): "
                f"{answered}/{sent} ops to unaffected nodes answered"
            )
        lines.append(report.format_check(self.check, self.t0_ns))
        lines.append(self.etags.describe())
        return "\n".join(lines)


def snapshot_server(dest: Path, source: str = "worktree") -> Path:
    """Copy the `quorumkv` package into `dest` and return the directory to put on PYTHONPATH.

    Every start and restart in a run then runs the same code, even if the working tree is
    being edited meanwhile (a half-saved edit would otherwise look like a server crash).
    `source="head"` takes the package as committed at git HEAD instead of the working tree:
    what to test while someone is in the middle of changing the server.
    """
    import quorumkv

    src = Path(quorumkv.__file__).parent
    if source == "head":
        repo = src.parents[1]
        rel = src.relative_to(repo).as_posix()
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "HEAD", rel], capture_output=True, check=True
        ).stdout
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest / Path(rel).parent
    shutil.copytree(src, dest / "quorumkv", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _replica_argv(node: NodeAddr, nodes: list[NodeAddr], data: Path) -> list[str]:
    """`nodes` is the bootstrap peer list; a node outside it joins later (advertises itself)."""
    peers = [arg for n in nodes for arg in ("--peer", f"{n.node_id}={n.url}")]
    if node not in nodes:
        peers += ["--advertise-url", node.url]
    return [
        sys.executable,
        "-m",
        "quorumkv",
        "serve",
        "--node-id",
        node.node_id,
        "--listen",
        f"{node.host}:{node.port}",
        *peers,
        "--data-dir",
        str(data),
    ]


async def _wait_ready(nodes: list[NodeAddr], timeout: float) -> bool:
    async with new_session() as session:
        return await wait_http(session, [n.url + "/readyz" for n in nodes], timeout=timeout)


async def _wait_alive(nodes: list[NodeAddr], timeout: float) -> bool:
    async with new_session() as session:
        return await wait_http(session, [n.url + "/healthz" for n in nodes], timeout=timeout)


async def run(cfg: RunConfig) -> RunResult:
    """Do one run and check it. Raises if the cluster never becomes ready at the start."""
    rng = random.Random(cfg.seed)
    hosts = [f"127.0.0.{cfg.first_host + i}" for i in range(cfg.replicas)]
    nodes = loopback_nodes(cfg.replicas, free_port(hosts, rng), cfg.first_host)
    bootstrap = nodes[: cfg.replicas - cfg.joiners]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cfg.snapshot_server:
        pkg = snapshot_server(cfg.workdir / "server-snapshot", cfg.server_source)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkg), env.get("PYTHONPATH")]))
    env.pop("QUORUMKV_UNSAFE_VOLATILE", None)
    if cfg.volatile:
        env["QUORUMKV_UNSAFE_VOLATILE"] = "1"
    env["QUORUMKV_TOMBSTONE_TTL"] = str(cfg.tombstone_ttl_s)
    procs = {
        n.node_id: Proc(
            f"n{n.node_id}",
            _replica_argv(n, bootstrap, cfg.workdir / f"data-{n.node_id}"),
            cfg.workdir / f"replica-{n.node_id}.log",
            env,
        )
        for n in nodes
    }
    want_net = bool(NET_KINDS & set(cfg.faults))
    use_net = want_net and iptables_usable()
    recorder = Recorder()
    with contextlib.ExitStack() as stack:
        stack.enter_context(ProcGroup(list(procs.values())))
        partitioner = stack.enter_context(Partitioner(nodes)) if use_net else None
        if not await _wait_ready(bootstrap, cfg.ready_timeout_s) or not await _wait_alive(
            nodes, cfg.ready_timeout_s
        ):
            raise RuntimeError(f"replicas not ready within {cfg.ready_timeout_s}s: {cfg.workdir}")
        t0 = time.monotonic_ns()
        until = t0 + int(cfg.duration_s * 1e9)
        urls = {n.node_id: n.url for n in nodes}
        nemesis_rng = random.Random(rng.random())
        scaler: MembershipNemesis | None = None
        if cfg.membership_plan:
            scaler = MembershipNemesis(
                procs,
                urls,
                [n.node_id for n in bootstrap],
                nemesis_rng,
                t0,
                change_timeout_s=cfg.change_timeout_s,
            )
            nemesis: Nemesis = scaler
        else:
            nemesis = Nemesis(procs, partitioner, nemesis_rng, t0)
        prefix = f"jk{cfg.seed}"
        groups = [
            KeyGroup(f"{prefix}g{g}", cfg.ops_per_key)
            for g in range((cfg.clients + cfg.clients_per_key - 1) // cfg.clients_per_key)
        ]
        clients = [
            Client(
                c,
                urls,
                groups[c // cfg.clients_per_key],
                recorder,
                random.Random(rng.random()),
                cfg.op_timeout_s,
                cfg.mix,
            )
            for c in range(cfg.clients)
        ]
        if scaler is not None:
            kinds = [k for k in cfg.faults if k in ("kill", "pause")]
            chaos: Awaitable[object] = asyncio.gather(
                scaler.drive(cfg.membership_plan, until),
                *(scaler.fault_loop(until, kinds) for _ in range(cfg.nemesis_loops) if kinds),
            )
        elif cfg.amnesia_rounds:
            chaos = nemesis.amnesia(cfg.amnesia_rounds, cfg.amnesia_hold_s)
        else:
            chaos = asyncio.gather(
                *(nemesis.random_faults(cfg.faults, until) for _ in range(cfg.nemesis_loops))
            )
        try:
            outcomes = await asyncio.gather(
                chaos, *(c.run(until) for c in clients), return_exceptions=True
            )
        finally:
            await nemesis.heal_all()
        errors = [f"{type(e).__name__}: {e}" for e in outcomes if isinstance(e, BaseException)]
        for e in errors:
            nemesis.note(f"HARNESS ERROR {e}")
        members = sorted(scaler.members) if scaler is not None else sorted(urls)
        ready = await _wait_ready([n for n in nodes if n.node_id in members], cfg.ready_timeout_s)
        nemesis.note(f"all members ready again: {ready}")
        keys = sorted({op.key for op in recorder.ops})
        member_urls = {n: urls[n] for n in members}  # a non-member answers 503
        final = await final_reads(member_urls, keys, recorder, cfg.op_timeout_s)
        nemesis.find_crashes()
        run_s = (time.monotonic_ns() - t0) / 1e9
    result = RunResult(
        config=cfg,
        ops=recorder.ops,
        check=checker.check(recorder.ops, cfg.check_budget),
        t0_ns=t0,
        fault_log=nemesis.log,
        fault_counts=dict(nemesis.counts),
        windows=nemesis.windows,
        partitions_enabled=use_net,
        final_read_ok=final,
        unsent=recorder.unsent,
        unexpected=recorder.unexpected,
        run_s=run_s,
        crashes=nemesis.crashes,
        errors=errors,
        etags=check_etags(recorder.ops),
        ready_after_heal=ready,
        changes=scaler.changes if scaler is not None else [],
        final_members=tuple(members),
        tombstones_collected=_tombstones_collected(p.log for p in procs.values()),
    )
    _save(result)
    return result


def _tombstones_collected(logs: Iterable[Path]) -> int:
    """Tombstones purged everywhere, from the replicas' logs (metrics restart with them)."""
    total = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if '"tombstones collected"' in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    total += int(json.loads(line)["purged"])
    return total


def _save(result: RunResult) -> None:
    """history.jsonl (one op per line, times relative to t0) and summary.txt in the workdir."""
    wd = result.config.workdir
    wd.mkdir(parents=True, exist_ok=True)
    with (wd / "history.jsonl").open("w") as out:
        for op in result.ops:
            d = dataclasses.asdict(op)
            d["invoke_ns"] -= result.t0_ns
            for k in ("complete_ns", "gave_up_ns"):
                if d[k] is not None:
                    d[k] -= result.t0_ns
            out.write(json.dumps(d, default=str) + "\n")
    (wd / "summary.txt").write_text(result.summary() + "\n")
