"""Network partitions between loopback addresses, with iptables DROP rules in a chain we own.

All of 127.0.0.0/8 is local and every replica listens on, and binds its outgoing peer
connections to, its own address; so dropping packets between two addresses (in OUTPUT,
which loopback traffic traverses) cuts exactly the links between those two replicas while
the test's clients (from 127.0.0.1) still reach both. Rules also match the replicas' ports,
so another test on the same addresses is left alone.

Rules live in a dedicated chain, `JEPSEN-QKV-<pid>`, jumped to from OUTPUT; `remove()`
deletes the jump and the chain, and `sweep_stale()` removes chains left by dead test
processes (a SIGKILLed pytest cannot clean up after itself). The name does not start with
`QKV-`: the local Kubernetes cluster's teardown (e2e/localcluster/down.sh) deletes every
`QKV-*` chain on the host, which would heal our partitions behind our back. Should the chain
vanish anyway, `heal()` recreates it rather than failing the run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from .procs import NodeAddr

CHAIN_PREFIX = "JEPSEN-QKV-"


def _ipt(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, check=check, timeout=30
    )


def iptables_usable() -> bool:
    """Root and a working iptables binary; installs it with apt-get if it is missing."""
    if os.geteuid() != 0:
        return False
    if shutil.which("iptables") is None:
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "iptables"],
                capture_output=True,
                timeout=300,
                check=False,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        if shutil.which("iptables") is None:
            return False
    try:
        return _ipt("-S", "OUTPUT", check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def sweep_stale() -> list[str]:
    """Delete our chains whose owning process is gone; returns their names."""
    listing = _ipt("-S", check=False).stdout
    removed = []
    for chain in sorted(set(re.findall(rf"^-N ({CHAIN_PREFIX}(\d+))$", listing, re.M))):
        name, pid = chain[0], int(chain[1])
        try:
            os.kill(pid, 0)
            continue  # its owner still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _drop_chain(name)
        removed.append(name)
    return removed


def _drop_chain(name: str) -> None:
    while _ipt("-D", "OUTPUT", "-j", name, check=False).returncode == 0:
        pass
    _ipt("-F", name, check=False)
    _ipt("-X", name, check=False)


class Partitioner:
    """Cuts and heals links between nodes. Use as a context manager: the chain is created on
    entry and deleted on exit, whatever happened in between."""

    def __init__(self, nodes: Sequence[NodeAddr]) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.chain = f"{CHAIN_PREFIX}{os.getpid()}"
        self.cut_pairs: set[frozenset[str]] = set()

    def __enter__(self) -> Partitioner:
        sweep_stale()
        _drop_chain(self.chain)  # a leftover of ours from an earlier run in this process
        self._create()
        return self

    def _create(self) -> None:
        _ipt("-N", self.chain)
        _ipt("-I", "OUTPUT", "1", "-j", self.chain)

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        _drop_chain(self.chain)
        self.cut_pairs.clear()

    def _rules(self, a: NodeAddr, b: NodeAddr) -> list[list[str]]:
        """The four flows between a and b: each side's requests to the other's port, and the
        replies coming back from that port."""
        tcp = ["-p", "tcp"]
        return [
            ["-s", a.host, "-d", b.host, *tcp, "--dport", str(b.port)],
            ["-s", b.host, "-d", a.host, *tcp, "--sport", str(b.port)],
            ["-s", b.host, "-d", a.host, *tcp, "--dport", str(a.port)],
            ["-s", a.host, "-d", b.host, *tcp, "--sport", str(a.port)],
        ]

    def lossy(self, probability: float) -> None:
        """Drop each packet between any two nodes with `probability` (Jepsen's packet
        nemesis): TCP retransmits, so links get slow and erratic rather than cut."""
        ids = sorted(self.nodes)
        chance = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.3f}"]
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                for rule in self._rules(self.nodes[a], self.nodes[b]):
                    _ipt("-A", self.chain, *rule, *chance, "-j", "DROP")

    def cut(self, a: str, b: str) -> None:
        """Drop everything between nodes a and b (both directions)."""
        pair = frozenset((a, b))
        if a == b or pair in self.cut_pairs:
            return
        for rule in self._rules(self.nodes[a], self.nodes[b]):
            _ipt("-A", self.chain, *rule, "-j", "DROP")
        self.cut_pairs.add(pair)

    def split(self, side: Iterable[str], other: Iterable[str]) -> None:
        """Cut every link across the two sides."""
        other = list(other)
        for a in side:
            for b in other:
                self.cut(a, b)

    def heal(self) -> None:
        """Remove every cut (the chain stays, empty; recreated if someone deleted it)."""
        self.cut_pairs.clear()
        if _ipt("-F", self.chain, check=False).returncode != 0:
            _drop_chain(self.chain)
            self._create()

    def rules(self) -> str:
        return _ipt("-S", self.chain, check=False).stdout
