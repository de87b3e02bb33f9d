"""Real `quorumkv serve` processes on loopback, with real faults: kill -9, SIGSTOP, restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jepsen.procs import free_port


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, from below the ephemeral range (see `free_port`)."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(free_port(["127.0.0.1"], taken=ports))
    return ports


class Replicas:
    """A cluster of N replica processes; logs go to files in the data root."""

    def __init__(self, root: Path, count: int, *, token: str | None = None,
                 env: dict[str, str] | None = None, request_timeout: float = 2.5) -> None:
        self.root = root
        self.urls = {str(i): f"http://127.0.0.1:{p}" for i, p in enumerate(free_ports(count))}
        self.bootstrap = dict(self.urls)  # the peer list every replica is started with
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, **(env or {})}
        self.token_file: Path | None = None
        self.request_timeout = request_timeout
        if token is not None:
            self.token_file = root / "token"
            self.token_file.write_text(token)

    def command(self, node: str) -> list[str]:
        cmd = [sys.executable, "-m", "quorumkv", "serve", "--node-id", node,
               "--listen", self.urls[node].removeprefix("http://"),
               "--data-dir", str(self.data_dir(node)),
               "--request-timeout", str(self.request_timeout)]
        for other, url in self.bootstrap.items():
            cmd += ["--peer", f"{other}={url}"]
        if node not in self.bootstrap:
            cmd += ["--advertise-url", self.urls[node]]
        if self.token_file is not None:
            cmd += ["--auth-token-file", str(self.token_file)]
        return cmd

    def data_dir(self, node: str) -> Path:
        return self.root / f"node-{node}"

    def env_for(self, node: str) -> dict[str, str]:
        """The environment `node` starts with (a test may run some replicas differently)."""
        return self.env

    def start(self, node: str) -> None:
        log = open(self.root / f"node-{node}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[node] = subprocess.Popen(self.command(node), stdout=log, stderr=log,
                                            env=self.env_for(node))
        log.close()

    def stop(self, node: str) -> None:
        """SIGTERM, as Kubernetes stops a pod: the replica finishes its last commit."""
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def add(self, node: str) -> None:
        """Start a new replica that is not in the peer list: it waits to be made a member."""
        self.urls[node] = f"http://127.0.0.1:{free_ports(1)[0]}"
        self.start(node)
        self.wait_alive([node])

    def start_all(self) -> None:
        for node in self.urls:
            self.start(node)
        self.wait_ready(list(self.urls))

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()

    def pause(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGCONT)

    def status(self, node: str, path: str) -> int:
        try:
            with urllib.request.urlopen(self.urls[node] + path, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def wait_ready(self, nodes: list[str], timeout: float = 30.0) -> None:
        self.wait_for("/readyz", nodes, timeout)

    def wait_synced(self, timeout: float = 30.0) -> None:
        """Until every replica has run anti-entropy with every member (`/v1/cluster`): a
        start-up comparison running during a test may repair a key the test is writing."""
        deadline = time.monotonic() + timeout
        for node, url in self.urls.items():
            while True:
                with urllib.request.urlopen(url + "/v1/cluster", timeout=2) as resp:
                    members = json.load(resp)["members"]
                if all(m["synced"] for m in members):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"replica {node} not synced with all: {members}")
                time.sleep(0.1)

    def wait_alive(self, nodes: list[str], timeout: float = 30.0) -> None:
        self.wait_for("/healthz", nodes, timeout)

    def wait_for(self, path: str, nodes: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes:
            while self.status(node, path) != 200:
                self.check_running()
                if time.monotonic() > deadline:
                    raise AssertionError(f"replica {node} not ready: {self.log(node)[-2000:]}")
                time.sleep(0.1)

    def check_running(self) -> None:
        """Fail with its log if any replica has exited: one that could not start (its port
        taken, say) keeps a new cluster from bootstrapping, so the others never get ready."""
        for node, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"replica {node} exited: {self.log(node)[-2000:]}")

    def log(self, node: str) -> str:
        path = self.root / f"node-{node}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for node in list(self.procs):
            self.stop(node)


@contextlib.contextmanager
def running(root: Path, count: int = 3, **options: Any) -> Iterator[Replicas]:
    """`count` replicas, ready and caught up with each other; stopped at the end."""
    replicas = Replicas(root, count, **options)
    try:
        replicas.start_all()
        replicas.wait_synced()
        yield replicas
    finally:
        replicas.stop_all()
