"""Jepsen-style tests: real replica processes, faults, and the history checked for
linearizability by our own checker (`jepsen/`).

- the fault machinery on its own, against `python -m http.server` (integration);
- a run of `quorumkv serve` x3 with clients and a random nemesis: kill -9 + restart, SIGSTOP,
  partitions and bridges with iptables — must be linearizable, lose nothing, keep serving;
- five replicas whose member set goes 3→5→3→1→3 through the admin API while replicas are
  killed and paused (only as many as keep a majority of the old and the new set up) —
  linearizable, nothing acknowledged lost, every change done;
- the same harness on the deliberately unsafe volatile mode, with a script that gives a
  replica amnesia: the checker must flag it, which proves the checker can see lost writes.

Run longer or with another seed: QKV_JEPSEN_DURATION=600 QKV_JEPSEN_SEED=7
pytest -m jepsen -s service/tests/test_jepsen.py
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from jepsen import netfault
from jepsen.nemesis import EXTRA_KINDS, FAULT_KINDS, Nemesis
from jepsen.procs import NodeAddr, Proc, ProcGroup, free_port, loopback_nodes, wait_http
from jepsen.runner import RunConfig, RunResult, run
from jepsen.scaling import (
    DEFAULT_PLAN,
    MembershipNemesis,
    safe_victims,
    tolerated_by_all,
    tolerates,
)
from jepsen.workload import Mix, new_session

HAVE_LOOPBACK_ALIASES = sys.platform == "linux"  # all of 127/8 answers on Linux
needs_linux = pytest.mark.skipif(not HAVE_LOOPBACK_ALIASES, reason="needs 127.0.0.x aliases")


# --- the fault machinery, on plain HTTP servers --------------------------------------------


@pytest.fixture
def http_nodes(tmp_path: Path) -> Iterator[tuple[list[NodeAddr], dict[str, Proc]]]:
    hosts = [f"127.0.0.{2 + i}" for i in range(3)]
    nodes = loopback_nodes(3, free_port(hosts))
    procs = {
        n.node_id: Proc(
            f"http{n.node_id}",
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                n.host,
                str(n.port),
                "--directory",
                str(tmp_path),
            ],
            tmp_path / f"http{n.node_id}.log",
        )
        for n in nodes
    }
    with ProcGroup(list(procs.values())):
        yield nodes, procs
    assert not any(p.running for p in procs.values())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as s:
        yield s


async def _get(session: aiohttp.ClientSession, url: str, timeout: float = 0.5) -> str:
    """'ok', 'refused' or 'timeout'."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            await r.read()
            return "ok" if r.status == 200 else f"status {r.status}"
    except aiohttp.ClientConnectorError:
        return "refused"
    except TimeoutError:
        return "timeout"


@needs_linux
@pytest.mark.integration
async def test_process_controller_kill_pause_restart(
    http_nodes: tuple[list[NodeAddr], dict[str, Proc]], session: aiohttp.ClientSession
) -> None:
    nodes, procs = http_nodes
    urls = [n.url + "/" for n in nodes]
    assert await wait_http(session, urls, timeout=15)
    victim, url = procs["1"], urls[1]
    victim.pause()
    assert await _get(session, url) == "timeout"  # stopped: the kernel accepts, nobody answers
    victim.resume()
    assert await _get(session, url, timeout=5) == "ok"
    pid = victim.pid
    victim.kill()
    assert not victim.running
    assert await _get(session, url) == "refused"
    victim.start()
    assert victim.pid != pid and victim.starts == 2
    assert await wait_http(session, [url], timeout=15)
    procs["2"].pause()  # the group must stop a paused process too


def _from(source: str, dest: NodeAddr, timeout: float = 1.0) -> str:
    """Open a TCP connection from `source` to `dest` and do one HTTP request."""
    try:
        with socket.create_connection(
            (dest.host, dest.port), timeout=timeout, source_address=(source, 0)
        ) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return "ok" if s.recv(12).startswith(b"HTTP/1.") else "garbled"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error {exc}"


@needs_linux
@pytest.mark.integration
async def test_partitioner_cuts_exactly_the_links_between_nodes(
    http_nodes: tuple[list[NodeAddr], dict[str, Proc]], session: aiohttp.ClientSession
) -> None:
    if not netfault.iptables_usable():
        pytest.skip("iptables not usable (needs root and the iptables binary)")
    nodes, _ = http_nodes
    n0, n1, n2 = nodes
    assert await wait_http(session, [n.url + "/" for n in nodes], timeout=15)
    with netfault.Partitioner(nodes) as net:
        net.cut("0", "1")
        assert _from(n0.host, n1) == "timeout"
        assert _from(n1.host, n0) == "timeout"
        assert _from(n0.host, n2) == "ok"  # other links untouched
        assert _from(n2.host, n1) == "ok"
        assert _from("127.0.0.1", n1) == "ok"  # clients still reach everyone
        net.heal()
        assert _from(n0.host, n1) == "ok"
        net.split(["2"], ["0", "1"])
        assert _from(n2.host, n0) == "timeout" and _from(n1.host, n2) == "timeout"
        assert _from(n0.host, n1) == "ok"
        net.heal()
        net.lossy(1.0)  # every packet between nodes dropped; clients unaffected
        assert _from(n0.host, n1) == "timeout" and _from(n2.host, n0) == "timeout"
        assert _from("127.0.0.1", n1) == "ok"
        chain = net.chain
    listing = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert chain not in listing  # the chain and its jump are gone
    assert _from(n2.host, n0) == "ok"


class FakeProc(Proc):
    """A Proc that only tracks state: the nemesis' bookkeeping without processes."""

    def __init__(self, name: str) -> None:
        super().__init__(name, [], Path("/dev/null"))
        self.up = True

    @property
    def running(self) -> bool:
        return self.up

    @property
    def crashed(self) -> int | None:
        return None

    def start(self) -> None:
        assert not self.up, "started twice"
        self.up, self.paused, self.starts = True, False, self.starts + 1

    def kill(self) -> None:
        self.up, self.paused = False, False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


async def _fault_fake_cluster(size: int) -> None:
    procs = {str(i): FakeProc(str(i)) for i in range(size)}
    nem = Nemesis(dict(procs), None, random.Random(size), time.monotonic_ns())
    worst = 0

    async def watch() -> None:
        nonlocal worst
        while True:
            worst = max(worst, sum(not p.up or p.paused for p in procs.values()))
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    await nem.random_faults(
        ("kill", "pause"),
        time.monotonic_ns() + int(0.6e9),
        hold=(0.01, 0.03),
        quiet=(0.0, 0.01),
    )
    watcher.cancel()
    await nem.heal_all()
    assert sum(nem.counts.values()) >= 5
    assert worst <= (size - 1) // 2, f"{worst} of {size} down at once"
    assert all(p.up and not p.paused for p in procs.values())
    assert len(nem.windows) == sum(nem.counts.values())


async def test_nemesis_faults_a_minority_at_a_time_and_undoes_everything() -> None:
    for size in (3, 5):
        await _fault_fake_cluster(size)


def test_membership_faults_keep_a_majority_of_every_set_involved() -> None:
    rng = random.Random(3)
    ids = [str(i) for i in range(5)]
    plans = [
        [frozenset("012")],
        [frozenset("012"), frozenset("01234")],
        [frozenset("01234"), frozenset("012")],
        [frozenset("012"), frozenset("0")],
        [frozenset("0"), frozenset("012")],
    ]
    for sets in plans:
        seen: set[tuple[str, ...]] = set()
        for _ in range(300):
            busy = set(rng.sample(ids, rng.randint(0, 2)))
            if not tolerated_by_all(sets, busy):
                continue
            victims = safe_victims(rng, ids, busy, sets, most=2)
            if victims:
                assert not busy & set(victims)
                assert tolerated_by_all(sets, busy | set(victims)), (sets, busy, victims)
                seen.add(victims)
        assert seen, sets  # always something to break: at least the non-members
    assert not tolerates("0", "0") and tolerates("012", "2") and not tolerates("0123", "23")
    assert safe_victims(rng, ["0"], set(), [frozenset("0")], most=2) == ()


async def test_membership_nemesis_pauses_respect_the_announced_target() -> None:
    """Fake processes, pauses only (no HTTP): while the target is switched back and forth, the
    nodes down at any instant never cost a majority of the member set or the target."""
    procs = {str(i): FakeProc(str(i)) for i in range(5)}
    nem = MembershipNemesis(dict(procs), {}, "012", random.Random(5), time.monotonic_ns())
    violations: list[tuple[list[frozenset[str]], set[str]]] = []
    changing = False  # the change itself has started (not merely announced)

    async def watch() -> None:
        while True:
            down = {n for n, p in procs.items() if p.paused}
            sets = nem.constraint_sets() if changing else [nem.members]
            if not tolerated_by_all(sets, down):
                violations.append((sets, down))
            await asyncio.sleep(0.001)

    async def flip() -> None:
        nonlocal changing
        for members, target in [("012", "01234"), ("01234", "012"), ("012", "0"), ("0", "012")]:
            nem.members, nem.target = frozenset(members), frozenset(target)
            # what `change` does: wait until the faults in flight fit the target too
            while not tolerated_by_all(nem.constraint_sets(), nem.down()):
                await asyncio.sleep(0.001)
            changing = True
            await asyncio.sleep(0.1)
            nem.members, nem.target, changing = frozenset(target), None, False
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    until = time.monotonic_ns() + int(0.8e9)
    await asyncio.gather(
        flip(),
        *(
            nem.fault_loop(until, ("pause",), hold=(0.01, 0.03), quiet=(0.0, 0.01))
            for _ in range(2)
        ),
    )
    watcher.cancel()
    await nem.heal_all()
    assert nem.counts.get("pause", 0) >= 5
    assert not violations, violations[:3]


# --- the real thing -------------------------------------------------------------------------


def _quorumkv_available() -> bool:
    try:
        import quorumkv.server  # noqa: F401
    except ImportError:
        return False
    return True


needs_server = pytest.mark.skipif(not _quorumkv_available(), reason="quorumkv serve missing")


def _timeout(default_duration_s: float, budget_s: float) -> pytest.MarkDecorator:
    """A pytest timeout that grows with QKV_JEPSEN_DURATION, so longer runs are possible."""
    duration = float(os.environ.get("QKV_JEPSEN_DURATION", default_duration_s))
    return pytest.mark.timeout(budget_s + max(0.0, duration - default_duration_s))


def _show(result: RunResult) -> None:
    print("\n" + result.summary() + f"\n(history and replica logs: {result.config.workdir})")


@needs_linux
@needs_server
@pytest.mark.jepsen
@_timeout(60.0, 240)
async def test_linearizable_and_available_under_faults(tmp_path: Path) -> None:
    """Kill -9, pause, partition and bridge one replica of three at a time — and now and then
    kill -9 all three at once (power loss: nothing acknowledged may be lost) — while 12
    clients (4 per key, fresh keys every 150 ops) read, write, CAS, create and delete."""
    cfg = RunConfig.from_env(tmp_path, duration_s=60.0, seed=1, faults=(*FAULT_KINDS, *EXTRA_KINDS))
    result = await run(cfg)
    _show(result)
    assert not result.errors, f"harness errors: {result.errors}"
    assert not result.crashes, f"replicas crashed: {result.crashes}"
    check = result.check
    assert check.valid is True, "history not linearizable (or undecided); see the report above"
    assert result.ready_after_heal, "not every replica was ready again after healing"
    assert result.etags.ok, "one etag was returned for two values:\n" + result.etags.describe()
    assert all(result.final_read_ok.values()), "some key could not be read after healing"
    # 4 clients per key: writes queue behind rounds in flight and go in batches (thousands of
    # them in 300 s), whose overwritten states the checker has seen too
    assert result.inner_versions > 0, "no batch of changes was checked"
    # progress: thousands of ops normally; a stalled cluster would manage a handful
    min_ok = int(20 * cfg.duration_s)
    assert result.ok_ops >= min_ok, f"only {result.ok_ops} ok ops (want ≥ {min_ok})"
    assert sum(result.fault_counts.values()) >= cfg.duration_s / 10, "too few faults injected"
    # availability: with one replica of three faulty, the other two keep answering
    for window, sent, answered in result.availability():
        if (window.end_ns - window.start_ns) >= 2e9 and sent:
            assert answered > 0, f"no answers from healthy nodes during {window}"
    assert not result.unexpected, f"unexpected statuses: {dict(result.unexpected)}"
    assert result.tombstones_collected > 0, "no tombstone was collected under faults"


@needs_linux
@needs_server
@pytest.mark.jepsen
@_timeout(50.0, 180)
async def test_linearizable_while_scaling_3_5_3_1_3_under_crashes_and_pauses(
    tmp_path: Path,
) -> None:
    """Five replica processes, 0-2 bootstrap and 3-4 start as non-members; the member set goes
    {0,1,2} → {0..4} → {0,1,2} → {0} → {0,1,2} through the admin API while two fault loops
    kill -9 + restart and SIGSTOP replicas — only sets whose loss leaves a majority of both
    the old and the new member set up — and 12 clients work through random replicas, members
    or not (a non-member answers 503). Then: heal, final reads through the members."""
    cfg = RunConfig.from_env(
        tmp_path,
        duration_s=50.0,
        seed=11,
        replicas=5,
        joiners=2,
        membership_plan=DEFAULT_PLAN,
        nemesis_loops=2,
        faults=("kill", "pause"),
        change_timeout_s=40.0,
    )
    result = await run(cfg)
    _show(result)
    assert not result.errors, f"harness errors: {result.errors}"
    assert not result.crashes, f"replicas crashed: {result.crashes}"
    assert result.check.valid is True, "history not linearizable (or undecided); see above"
    assert result.etags.ok, "one etag was returned for two values:\n" + result.etags.describe()
    states = [(c.new, c.state) for c in result.changes]
    assert [c.new for c in result.changes] == list(cfg.membership_plan), states
    assert all(c.state == "done" for c in result.changes), f"changes not done: {states}"
    assert result.final_members == cfg.membership_plan[-1]
    assert result.ready_after_heal, "not every member was ready again after healing"
    assert all(result.final_read_ok.values()), "some key could not be read after healing"
    min_ok = int(10 * cfg.duration_s)
    assert result.ok_ops >= min_ok, f"only {result.ok_ops} ok ops (want ≥ {min_ok})"
    faults = result.fault_counts.get("kill", 0) + result.fault_counts.get("pause", 0)
    assert faults >= cfg.duration_s / 10, f"too few faults injected: {result.fault_counts}"
    assert sum(c.faults_during for c in result.changes) > 0, "no fault during any change"
    assert not result.unexpected, f"unexpected statuses: {dict(result.unexpected)}"


@needs_linux
@needs_server
@pytest.mark.jepsen
@pytest.mark.timeout(180)
async def test_checker_flags_amnesia_in_the_unsafe_volatile_mode(tmp_path: Path) -> None:
    """QUORUMKV_UNSAFE_VOLATILE=1 keeps Paxos state in memory only. Kill -9 c; let a and b
    acknowledge writes; pause a; kill -9 and restart b, restart c: both empty, a majority
    that never saw those writes. Reads through them must show up as a violation.

    No deletes in this workload, so an acknowledged key never legitimately reads as absent
    (which is what amnesia looks like); a short client timeout keeps clients from idling on
    the paused node. Flagged in every one of 8 seeds tried; still bounded to 3 attempts."""
    flagged: RunResult | None = None
    for attempt in range(3):
        cfg = RunConfig(
            workdir=tmp_path / f"attempt{attempt}",
            seed=100 + attempt,
            duration_s=16.0,
            volatile=True,
            amnesia_rounds=2,
            amnesia_hold_s=2.0,
            faults=(),
            op_timeout_s=1.0,
            mix=Mix(delete=0.0, create=0.05),
        )
        result = await run(cfg)
        _show(result)
        assert not result.errors, f"harness errors: {result.errors}"
        if result.check.valid is False:
            flagged = result
            break
    assert flagged is not None, "the checker did not catch amnesia in 3 runs"
    failure = flagged.check.failures[0]
    assert failure.culprit, "a failure must name the op that cannot be explained"


@pytest.mark.integration
def test_no_leftover_iptables_chains() -> None:
    """Earlier runs (even killed ones) must not leave chains behind: every chain of ours
    that remains belongs to a live process (a run going on right now)."""
    if os.geteuid() != 0 or not netfault.iptables_usable():
        pytest.skip("iptables not usable")
    netfault.sweep_stale()
    listing = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if line.startswith("-N " + netfault.CHAIN_PREFIX):
            pid = int(line.split()[1].removeprefix(netfault.CHAIN_PREFIX))
            os.kill(pid, 0)  # raises if its owner is gone
