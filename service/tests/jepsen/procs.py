"""Processes we own: start, kill -9, pause (SIGSTOP), resume, restart with the same data dir.

Kept generic (an argv per process) so it can be tested against `python -m http.server` as
well as driving `quorumkv serve`. Every process runs in its own session so nothing we do
reaches the test runner's process group, and `close()` always leaves none running —
resuming paused ones first, since a stopped process cannot act on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType

import aiohttp


@dataclasses.dataclass(frozen=True)
class NodeAddr:
    """Where a replica listens: its own loopback address, so iptables can single it out."""

    node_id: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def loopback_nodes(count: int, port: int, first_host: int = 2) -> list[NodeAddr]:
    """`count` nodes on 127.0.0.<first_host>…, all on `port`."""
    return [NodeAddr(str(i), f"127.0.0.{first_host + i}", port) for i in range(count)]


def ephemeral_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections: a port picked at or above
    it can be taken by some replica's client socket before the replica meant for it binds."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(hosts: Sequence[str], rng: random.Random | None = None,
              taken: Collection[int] = ()) -> int:
    """A TCP port free on every host (tried by binding), not in `taken`, chosen at random
    below the ephemeral range so that neither concurrent test runs nor outgoing
    connections take it between this check and the replica's bind."""
    rng = rng or random.Random()
    high = max(ephemeral_floor() - 1, 11000)
    for _ in range(200):
        port = rng.randint(10000, high)
        if port in taken:
            continue
        socks: list[socket.socket] = []
        try:
            for host in hosts:
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no free port common to {hosts}")


class Proc:
    """One process under our control, restartable with the same argv (hence the same data
    directory). Its output goes to `log`, appended across restarts."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0
        self.killed = False  # by us: an exit we caused, not a crash

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start #{self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        self.starts += 1
        self.paused = False
        self.killed = False

    def _signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    @property
    def crashed(self) -> int | None:
        """The exit code if it exited on its own (not killed or stopped by us), else None."""
        if self.popen is None or self.killed:
            return None
        return self.popen.poll()

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        self.killed = True
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (after SIGCONT), then SIGKILL if it does not exit within `grace`."""
        if self.popen is None:
            return
        self.killed = True
        if self.popen.poll() is None:
            self.resume()
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self.paused = False


class ProcGroup:
    """Several `Proc`s stopped together however the block is left (a context manager)."""

    def __init__(self, procs: Sequence[Proc]) -> None:
        self.procs = list(procs)

    def __enter__(self) -> ProcGroup:
        for p in self.procs:
            p.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for p in self.procs:
            p.resume()  # a stopped process would sit on SIGTERM until the grace runs out
        for p in self.procs:
            p.stop(grace=3.0)


async def wait_http(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    *,
    timeout: float,
    accept: Callable[[int], bool] = lambda status: status == 200,
) -> bool:
    """Poll every url until each answers an accepted status, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        still: list[str] = []
        for url in pending:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                    await resp.read()
                    if not accept(resp.status):
                        still.append(url)
            except (TimeoutError, aiohttp.ClientError):
                still.append(url)
        pending = still
        if pending:
            await asyncio.sleep(0.1)
    return not pending
