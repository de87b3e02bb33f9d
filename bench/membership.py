#!/usr/bin/env python3
"""Throughput during a membership change, and how long the rescan of N keys takes.

Starts 3 replicas (plus 2 that join later) on 127.0.0.1, fills N keys (default 100,000),
measures PUT throughput in steady state with wrk (the same Lua script as bench/run.py,
connections spread over the members), then changes the membership 3 -> 5 while wrk keeps
running in back-to-back windows, and reports the throughput of the windows that lay wholly
inside the change against the steady state (issue #5's target: >= 0.5x), and the rescan time.

    .venv/bin/python bench/membership.py [--keys 100000] [--window 10]

Writes bench/results/membership.json and bench/MEMBERSHIP.md. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "service"))

from quorumkv.client import Client  # noqa: E402

LUA = ROOT / "bench" / "lua" / "qkv_put.lua"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(node: str, urls: dict[str, str], bootstrap: list[str],
          root: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "quorumkv", "serve", "--node-id", node,
           "--listen", urls[node].removeprefix("http://"), "--data-dir", str(root / node)]
    for peer in bootstrap:
        cmd += ["--peer", f"{peer}={urls[peer]}"]
    if node not in bootstrap:
        cmd += ["--advertise-url", urls[node]]
    log = open(root / f"{node}.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(
        ROOT / "service")})


async def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with Client(url, timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if await client.ready():
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


async def fill(urls: list[str], keys: int) -> float:
    started = time.monotonic()
    clients = [Client(u, timeout=10) for u in urls]
    queue = iter(range(keys))

    async def worker(i: int) -> None:
        client = clients[i % len(clients)]
        for k in queue:
            await client.put(f"key-{k:08d}", b"v" * 64)

    await asyncio.gather(*(worker(i) for i in range(48)))
    for client in clients:
        await client.close()
    return time.monotonic() - started


def wrk(targets: list[str], seconds: int, keys: int) -> float:
    """PUT throughput (ok/s) of one wrk window."""
    env = {**os.environ, "BENCH_TARGETS": ",".join(t.removeprefix("http://") for t in targets),
           "BENCH_KEYSPACE": str(keys), "BENCH_VALUE": "64", "BENCH_RUN": str(time.time())}
    out = subprocess.run(["wrk", "-t4", "-c64", f"-d{seconds}s", "-s", str(LUA),
                          "http://" + targets[0].removeprefix("http://")],
                         env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"WRKJSON (\{.*\})", out)
    if match is None:
        raise SystemExit(f"no WRKJSON in wrk output:\n{out}")
    data = json.loads(match.group(1))
    return float(data["ok"]) / (float(data["duration_us"]) / 1e6)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=10, help="seconds per wrk window")
    ap.add_argument("--steady-windows", type=int, default=2)
    opts = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    root = Path(tempfile.mkdtemp(prefix="qkv-membership-", dir="/var/tmp"))
    urls = {str(i): f"http://127.0.0.1:{free_port()}" for i in range(5)}
    bootstrap = ["0", "1", "2"]
    procs = {n: start(n, urls, bootstrap, root) for n in bootstrap}
    try:
        for n in bootstrap:
            await wait_ready(urls[n])
        members = [urls[n] for n in bootstrap]
        print(f"filling {opts.keys} keys ...", flush=True)
        fill_s = await fill(members, opts.keys)
        print(f"filled in {fill_s:.1f} s", flush=True)
        steady = [wrk(members, opts.window, opts.keys) for _ in range(opts.steady_windows)]
        print(f"steady PUT: {steady} ok/s", flush=True)
        for n in ("3", "4"):
            procs[n] = start(n, urls, bootstrap, root)
        await asyncio.sleep(2)
        async with Client(urls["0"], timeout=10) as client:
            await client.change_membership(urls)
            change_started = time.monotonic()
            windows: list[tuple[float, float, float]] = []
            loop = asyncio.get_running_loop()
            while True:
                view = await client.membership()
                state = view["change"]["state"]
                if state in ("done", "failed"):
                    break
                w_start = time.monotonic()
                rate = await loop.run_in_executor(None, wrk, members, opts.window, opts.keys)
                windows.append((w_start, time.monotonic(), rate))
            change_s = time.monotonic() - change_started
            view = await client.membership()
        change = view["change"]
        if change["state"] != "done":
            raise SystemExit(f"change failed: {change}")
        inside = [rate for start_, end, rate in windows
                  if end <= change_started + change_s] or [r for _, _, r in windows]
        steady_rate = sorted(steady)[len(steady) // 2]
        during = sorted(inside)[len(inside) // 2] if inside else 0.0
        result = {
            "keys": opts.keys, "fill_seconds": round(fill_s, 1),
            "change_seconds": round(change_s, 1), "rescanned": change["rescanned"],
            "rescan_keys_per_second": round(change["rescanned"] / change_s, 1),
            "steady_put_ops": steady, "during_change_put_ops": [w[2] for w in windows],
            "ratio_during_over_steady": round(during / steady_rate, 2) if steady_rate else None,
            "loadavg": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "membership.json").write_text(json.dumps(result, indent=2))
        (ROOT / "bench" / "MEMBERSHIP.md").write_text(
            "# Throughput during a membership change (3 -> 5)\n\n"
            f"Generated by `bench/membership.py` at {result['at']} "
            f"(load average {', '.join(f'{x:.2f}' for x in result['loadavg'])}).\n\n"
            "| keys | change (joint, rescan, new set) | rescan rate | steady PUT ops/s | "
            "PUT ops/s during the change | ratio (target >= 0.5) |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: |\n"
            f"| {opts.keys} | {result['change_seconds']} s | "
            f"{result['rescan_keys_per_second']} keys/s | {steady_rate:.0f} | {during:.0f} | "
            f"{result['ratio_during_over_steady']} |\n\n"
            "wrk (same Lua script as bench/run.py), 64 connections over the 3 old members, "
            f"{opts.window} s windows back to back during the change, median of the windows "
            "that lay wholly inside it; 64-byte values, random keys of the filled keyspace.\n")
        print(json.dumps(result, indent=2))
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
