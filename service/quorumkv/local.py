"""`quorumkv local`: N real replica processes on 127.0.0.1, to try QuorumKV without Kubernetes."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

READY_TIMEOUT = 30.0


def run_local(replicas: int, base_port: int, data_dir: str | None) -> int:
    if not 1 <= replicas <= 9:
        print("quorumkv local: error: --replicas must be between 1 and 9", file=sys.stderr)
        return 2
    if not 1024 <= base_port <= 65535 - replicas:
        print("quorumkv local: error: --base-port must leave room for every replica",
              file=sys.stderr)
        return 2
    busy = [port for port in range(base_port, base_port + replicas) if _in_use(port)]
    if busy:
        # checked before starting: otherwise another cluster on these ports answers for ours
        print(f"quorumkv local: error: port {', '.join(map(str, busy))} of 127.0.0.1 is in "
              "use (another `quorumkv local`?); stop it or choose another --base-port",
              file=sys.stderr)
        return 1
    root = Path(data_dir or "quorumkv-data").resolve()
    urls = {str(i): f"http://127.0.0.1:{base_port + i}" for i in range(replicas)}
    peers = [arg for node, url in urls.items() for arg in ("--peer", f"{node}={url}")]
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    commands = {node: ["serve", "--node-id", node, "--listen", url.removeprefix("http://"),
                       "--data-dir", str(root / f"node-{node}"), *peers]
                for node, url in urls.items()}
    for command in commands.values():
        procs.append(subprocess.Popen([sys.executable, "-m", "quorumkv", *command]))
    try:
        if _wait_ready(list(urls.values()), procs, lambda: stopping):
            print(f"QuorumKV: {replicas} replicas ready, data in {root}", flush=True)
            for node, url in urls.items():
                print(f"  replica {node}: {url}", flush=True)
            print(f"Try: quorumkv put hello world --endpoint {urls['0']}  "
                  "(Ctrl-C stops them all)", flush=True)
        elif not stopping and any(p.poll() is not None for p in procs):
            crashed = [f"{i} (status {p.returncode})" for i, p in enumerate(procs)
                       if p.poll() is not None]
            print(f"quorumkv local: replica {', '.join(crashed)} could not start, its error "
                  "is logged above; stopping all", file=sys.stderr)
            return 1
        gone: set[int] = set()  # once up, a replica that dies (kill -9) leaves the others be
        while not stopping and len(gone) < len(procs):
            for i, p in enumerate(procs):
                if i not in gone and p.poll() is not None:
                    gone.add(i)
                    print(f"quorumkv local: replica {i} exited (status {p.returncode}); the "
                          "others go on. To start it again on its data: quorumkv "
                          + shlex.join(commands[str(i)]), file=sys.stderr, flush=True)
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _in_use(port: int) -> bool:
    """Whether a replica could not listen on `port` (bound as the replicas bind)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait_ready(urls: list[str], procs: list[subprocess.Popen[bytes]],
                stopping: object) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    pending = {url: "not answering" for url in urls}  # each with why it is not ready
    while pending and time.monotonic() < deadline:
        if stopping() or any(p.poll() is not None for p in procs):  # type: ignore[operator]
            return False
        for url in list(pending):
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        del pending[url]
            except urllib.error.HTTPError as exc:  # 503 says why
                pending[url] = _reason(exc.read())
            except OSError:
                pass
        time.sleep(0.2)
    if pending:
        print(f"quorumkv local: not ready after {READY_TIMEOUT:.0f}s: "
              + "; ".join(f"{url} ({reason})" for url, reason in sorted(pending.items())),
              file=sys.stderr)
        if any("not a member" in reason for reason in pending.values()):
            print("quorumkv local: the data directory holds a cluster with other members: "
                  "start it with the --replicas it had, or use another --data-dir (a running "
                  "cluster gains members through a membership change: README, Scaling)",
                  file=sys.stderr)
    return not pending


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body)["reason"])
    except (ValueError, KeyError, TypeError):
        return "not ready"
