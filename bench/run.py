#!/usr/bin/env python3
"""QuorumKV vs etcd: the same driver (wrk + Lua), interleaved, on this machine.

Starts a 3-replica QuorumKV cluster (`quorumkv serve` x3 on 127.0.0.1) and a 3-member etcd
cluster (Debian's `etcd-server`, JSON gRPC gateway) with their data on the real disk, checks
that both answer correctly, pre-fills the keyspace, then for each round runs every workload on
both systems back to back (alternating which goes first), and reports per workload the median
of the rounds: throughput of successful operations, p50 and p99 latency. Writes
bench/results/latest.json and bench/RESULTS.md with the ratios against the targets.

Only the standard library is used, so any python3 >= 3.9 runs it:
    python3 bench/run.py                      # the whole benchmark, <= ~6 min
    python3 bench/run.py --systems etcd       # only the etcd half
    python3 bench/run.py --rounds 1 --duration 5 --profile bench/results/profile
See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LUA = BENCH / "lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# name -> (etcd script, quorumkv script, connections, threads); None = take from the options
WORKLOADS: dict[str, tuple[str, str, int | None, int | None]] = {
    "put": ("etcd_put.lua", "qkv_put.lua", None, None),
    "get": ("etcd_range.lua", "qkv_get.lua", None, None),
    "create": ("etcd_txn_create.lua", "qkv_create.lua", None, None),
    "put_1conn": ("etcd_put.lua", "qkv_put.lua", 1, 1),
    "get_1conn": ("etcd_range.lua", "qkv_get.lua", 1, 1),
    # experiments: every connection to the member that proposes the writes (QuorumKV's home,
    # etcd's leader), as a client that routes its writes there does
    "put_home": ("etcd_put.lua", "qkv_put.lua", None, None),
    "get_home": ("etcd_range.lua", "qkv_get.lua", None, None),
    # half reads, half writes on 10 hot keys: reads that meet writes in flight
    "mixed_hot": ("etcd_mixed.lua", "qkv_mixed.lua", None, None),
    # only writes on 10 hot keys: a leader's log against rounds shared by a key's writes
    "put_hot": ("etcd_mixed.lua", "qkv_mixed.lua", None, None),
}
READ_SHARE = {"put_hot": 0.0}  # of the mixed scripts (default 0.5)
AT_HOME = {"put_home", "get_home"}
DEFAULT_WORKLOADS = "put,get,create,put_1conn"

LABELS = {
    "put": ("PUT", "put", "PUT"),
    "get": ("GET (linearizable)", "range (linearizable)", "GET"),
    "create": ("create-only PUT", "txn compare-and-put (create_revision==0)",
               "PUT If-None-Match: *"),
    "put_1conn": ("PUT, 1 connection", "put, wrk -c1 -t1", "PUT, wrk -c1 -t1"),
    "get_1conn": ("GET, 1 connection", "range, wrk -c1 -t1", "GET, wrk -c1 -t1"),
    "put_home": ("PUT, keys routed to a home member", "put", "PUT"),
    "get_home": ("GET, keys routed to a home member", "range", "GET"),
    "mixed_hot": ("half reads, half writes on 10 hot keys", "range + put", "GET + PUT"),
    "put_hot": ("PUT on 10 hot keys", "put", "PUT"),
}

# target: (metric, comparison, factor, description)
TARGETS: dict[str, list[tuple[str, str, float, str]]] = {
    "put": [("rps", ">=", 1.25, "throughput >= 1.25x etcd put"),
            ("p99_ms", "<=", 1.25, "p99 <= 1.25x etcd's")],
    "get": [("rps", ">=", 2.0, "throughput >= 2x etcd linearizable range")],
    "create": [("rps", ">=", 1.5, "throughput >= 1.5x etcd txn compare-and-put")],
    "put_1conn": [("p50_ms", "<=", 1.5, "p50 <= 1.5x etcd's")],
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ environment
def ensure_tools(no_install: bool) -> None:
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("etcd", "etcd-server"))
               if shutil.which(tool) is None]
    if not missing:
        return
    if no_install or os.geteuid() != 0:
        sys.exit(f"missing packages {missing}: apt-get install -y {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(12):
        log(f"installing {' '.join(missing)} with apt-get (attempt {attempt + 1}) ...")
        r = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env,
                           capture_output=True, text=True)
        if r.returncode == 0:
            log("installed")
            return
        if "Unable to locate package" in r.stderr or "has no installation candidate" in r.stderr:
            log("package lists look stale: apt-get update ...")
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            continue
        if "lock" in r.stderr:
            log("dpkg is locked by another apt run; waiting 10 s")
            time.sleep(10)
            continue
        sys.exit(f"apt-get failed:\n{r.stderr[-2000:]}")
    sys.exit("could not install the packages (dpkg lock held too long)")


def fs_type(path: Path) -> str:
    best, fstype = "", "?"
    real = str(path.resolve())
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, parts[2]
    return fstype


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def host_speed() -> dict[str, float]:
    """How fast this (virtual) machine is right now, to compare runs made on different days:
    a step of a Python loop (the interpreter's speed) and a round trip through pipes between
    two processes (a wake-up each way). QuorumKV hands every operation between processes
    several times, so where wake-ups are dear it loses more than etcd does (bench/README.md,
    eleventh pass)."""
    steps = 2_000_000
    start = time.perf_counter()
    total = 0
    for i in range(steps):
        total += i
    loop_ns = (time.perf_counter() - start) / steps * 1e9
    trips = 5000
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:
        for _ in range(trips):
            os.read(to_child, 1)
            os.write(from_child, b"x")
        os._exit(0)
    start = time.perf_counter()
    for _ in range(trips):
        os.write(from_parent, b"x")
        os.read(to_parent, 1)
    trip_us = (time.perf_counter() - start) / trips * 1e6
    os.waitpid(pid, 0)
    for fd in (to_child, from_parent, to_parent, from_child):
        os.close(fd)
    return {"python_loop_step_ns": round(loop_ns, 1), "pipe_round_trip_us": round(trip_us, 1)}


def cpu_busy_seconds() -> float:
    """All CPUs' non-idle time (user+nice+system+irq+softirq+steal), in seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, cpu seconds) for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        out[int(d)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


def descendants(table: dict[int, tuple[int, str, float]], roots: set[int]) -> set[int]:
    children = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(children.get(p, []))
    return seen


def heavy_processes() -> list[str]:
    """Other work that is known to hog the CPUs here (compilers, go build)."""
    r = subprocess.run(["pgrep", "-fa", r"go build|go install|/compile |compile -o|\bcc1 |/link |"
                        r"\bmake\b|ninja|docker build|kind build"],
                       capture_output=True, text=True)
    me = str(os.getpid())
    return [ln for ln in r.stdout.splitlines() if ln and not ln.startswith(me + " ")
            and "pgrep" not in ln]


def busy_cores_sample(seconds: float) -> float:
    a = cpu_busy_seconds()
    time.sleep(seconds)
    return (cpu_busy_seconds() - a) / seconds


# -------------------------------------------------------------------------------- processes
class Cluster:
    name = "?"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def spawn(self, cmd: list[str], logname: str, env: dict[str, str] | None = None) -> None:
        logpath = self.workdir / logname
        with open(logpath, "ab") as fh:
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        self.procs.append(p)
        self.logs.append(logpath)

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def check_alive(self) -> None:
        for p, lg in zip(self.procs, self.logs, strict=True):
            if p.poll() is not None:
                tail = lg.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name}: process {p.pid} exited ({p.returncode}); "
                                   f"log {lg}:\n{tail}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)  # its own session: the group it leads
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


class Etcd(Cluster):
    name = "etcd"

    def __init__(self, workdir: Path, binary: str, members: int = 3) -> None:
        super().__init__(workdir)
        ports = free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.binary = binary
        self.members = members
        self.leader_index = 0

    def start(self) -> None:
        token = "qkv-bench-" + secrets.token_hex(4)
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        for i in range(self.members):
            c, p = self.client_ports[i], self.peer_ports[i]
            self.spawn([self.binary, "--name", f"e{i}", "--data-dir", str(self.workdir / f"e{i}"),
                        "--listen-client-urls", f"http://127.0.0.1:{c}",
                        "--advertise-client-urls", f"http://127.0.0.1:{c}",
                        "--listen-peer-urls", f"http://127.0.0.1:{p}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                        "--initial-cluster", initial, "--initial-cluster-state", "new",
                        "--initial-cluster-token", token,
                        "--logger", "zap", "--log-level", "warn"], f"etcd{i}.log")
        deadline = time.time() + 60
        while True:
            self.check_alive()
            try:
                if all(b'"health":"true"' in http_call("GET", f"127.0.0.1:{c}", "/health")[1]
                       for c in self.client_ports):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("etcd did not become healthy in 60 s")
            time.sleep(0.3)
        for i, c in enumerate(self.client_ports):
            _, body = http_call("POST", f"127.0.0.1:{c}", "/v3/maintenance/status", b"{}")
            js = json.loads(body)
            if js.get("leader") and js["leader"] == js["header"]["member_id"]:
                self.leader_index = i
        log(f"etcd up: client ports {self.client_ports}, leader e{self.leader_index}")

    def targets(self, mode: str) -> list[str]:
        order = ([self.leader_index]
                 + [i for i in range(self.members) if i != self.leader_index])
        if mode == "leader":
            order = order[:1]
        return [f"127.0.0.1:{self.client_ports[i]}" for i in order]

    # --- correctness of the requests the Lua scripts send
    def smoke(self) -> None:
        hp = self.targets("all")[0]

        def b(s: bytes) -> str:
            return base64.b64encode(s).decode()

        st, body = http_call("POST", hp, "/v3/kv/put",
                             json.dumps({"key": b(b"smoke"), "value": b(b"v1" * 32)}).encode())
        assert st == 200, (st, body)
        for other in self.targets("all"):
            st, body = http_call("POST", other, "/v3/kv/range",
                                 json.dumps({"key": b(b"smoke")}).encode())
            assert st == 200 and json.loads(body)["kvs"][0]["value"] == b(b"v1" * 32), body
        fresh = b(f"smoke-{secrets.token_hex(4)}".encode())
        txn = json.dumps({"compare": [{"key": fresh, "result": "EQUAL", "target": "CREATE",
                                       "create_revision": "0"}],
                          "success": [{"request_put": {"key": fresh, "value": b(b"x")}}]})
        st, body = http_call("POST", hp, "/v3/kv/txn", txn.encode())
        assert st == 200 and json.loads(body).get("succeeded") is True, body
        st, body = http_call("POST", hp, "/v3/kv/txn", txn.encode())
        assert st == 200 and not json.loads(body).get("succeeded"), body
        log("etcd smoke test ok (put/range on every member, txn create-only succeeds once)")

    def put_request(self, key: bytes, value: bytes) -> tuple[str, str, bytes, dict[str, str]]:
        body = json.dumps({"key": base64.b64encode(key).decode(),
                           "value": base64.b64encode(value).decode()}).encode()
        return "POST", "/v3/kv/put", body, {"Content-Type": "application/json"}


class QuorumKV(Cluster):
    name = "quorumkv"

    def __init__(self, workdir: Path, command: list[str], mode: str, replicas: int = 3,
                 name: str = "quorumkv", env: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.name = name
        self.tag = name.replace(":", "-")
        self.extra_env = env or {}
        self.command = command
        self.mode = mode
        self.replicas = replicas
        if mode == "local":
            while True:
                base = free_ports(1)[0]
                if base + replicas < 65536 and all(port_free(base + i) for i in range(replicas)):
                    break
            self.ports = [base + i for i in range(replicas)]
        else:
            self.ports = free_ports(replicas)

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("QUORUMKV_PEERS", None)
        env.update(self.extra_env)
        if self.mode == "local":
            self.spawn([*self.command, "local", "--replicas", str(self.replicas), "--base-port",
                        str(self.ports[0]), "--data-dir", str(self.workdir / self.tag)],
                       f"{self.tag}-local.log", env)
        else:
            peers = []
            for i, p in enumerate(self.ports):
                peers += ["--peer", f"{i}=http://127.0.0.1:{p}"]
            for i, p in enumerate(self.ports):
                self.spawn([*self.command, "serve", "--node-id", str(i), "--listen",
                            f"127.0.0.1:{p}", *peers, "--data-dir",
                            str(self.workdir / f"{self.tag}{i}")], f"{self.tag}{i}.log", env)
        deadline = time.time() + 60
        while True:
            self.check_alive()
            try:
                if all(http_call("GET", f"127.0.0.1:{p}", "/readyz")[0] == 200
                       for p in self.ports):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("quorumkv replicas did not become ready in 60 s")
            time.sleep(0.3)
        log(f"quorumkv up: ports {self.ports} ({self.mode}), pids {sorted(self.replica_pids())}")

    def replica_pids(self) -> set[int]:
        if self.mode == "serve":
            return self.pids
        table = proc_table()
        return descendants(table, self.pids) - self.pids or self.pids

    def targets(self, mode: str) -> list[str]:
        """Mode "leader": the home only, replica "0" (`quorumkv.placement`: its id sorts
        first)."""
        t = [f"127.0.0.1:{p}" for p in self.ports]
        return t[:1] if mode == "leader" else t

    def smoke(self) -> None:
        hp = self.targets("all")[0]
        value = b"v1" * 32
        st, body = http_call("PUT", hp, "/v1/kv/smoke", value,
                             {"Content-Type": "application/octet-stream"})
        assert st in (200, 201), (st, body)
        for other in self.targets("all"):
            st, body = http_call("GET", other, "/v1/kv/smoke")
            assert st == 200 and body == value, (other, st, body)
        fresh = f"/v1/kv/smoke-{secrets.token_hex(4)}"
        st, body = http_call("PUT", hp, fresh, b"x", {"If-None-Match": "*"})
        assert st == 201, (st, body)
        st, body = http_call("PUT", hp, fresh, b"y", {"If-None-Match": "*"})
        assert st == 412, (st, body)
        log("quorumkv smoke test ok (put, get on every replica, create-only 201 then 412)")

    def put_request(self, key: bytes, value: bytes) -> tuple[str, str, bytes, dict[str, str]]:
        return ("PUT", "/v1/kv/" + urllib.parse.quote(key, safe=""), value,
                {"Content-Type": "application/octet-stream"})


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: what the image runs (e2e/image, Dockerfile)
_PROBE = ("import platform, aiohttp, msgpack, orjson, uvloop, prometheus_client; "
          "print(platform.python_version())")


class Interpreter(NamedTuple):
    """What runs the replicas: `python` with `path` (site-packages, sources) prepended."""

    python: str
    path: list[str]
    description: str


def replica_interpreter(choice: str) -> Interpreter:
    """The Python the replicas run on. "venv": the project's venv. "system": the system's
    python3 (Debian's, the interpreter of the image the StatefulSet runs) with the venv's
    packages, which needs the same minor version (their compiled modules). "auto" (the
    default): "system" if that works, else "venv".

    Why not always the venv's: its interpreter may be a local build without the
    optimizations distributions use (pyenv builds without PGO and LTO, and links libpython
    as a shared library): measured here 21% slower per Python loop step than Debian's, and
    QuorumKV ~20% fewer puts/s on it (bench/README.md, seventeenth pass). etcd is a release
    build; QuorumKV should run on the Python it ships with, not on a debug-speed one."""
    venv_py = REPO / ".venv" / "bin" / "python"
    own = str(venv_py) if venv_py.exists() else sys.executable
    venv = Interpreter(own, [], f"{own} (Python {platform.python_version()}, the venv's)")
    if choice == "venv":
        return venv
    python = SYSTEM_PYTHON if choice in ("auto", "system") else choice
    site = sysconfig.get_path("purelib", vars={"base": str(REPO / ".venv"),
                                                "platbase": str(REPO / ".venv")})
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=site))
        version, failure = probe.stdout.strip(), probe.stderr.strip()[-300:]
    except OSError as exc:
        probe, version, failure = None, "", str(exc)
    if probe is not None and probe.returncode == 0 and version.rsplit(".", 1)[0] == mine:
        return Interpreter(python, [site], f"{python} (Python {version}) with the venv's "
                           "packages")
    if choice == "auto":
        return venv
    sys.exit(f"{python} cannot run the replicas with the venv's packages (Python {mine} "
             f"needed): {failure or 'Python ' + version}")


def qkv_command(spec: str, default: str | None, workdir: Path, interpreter: Interpreter
                ) -> tuple[list[str], dict[str, str], str]:
    """-> (command, env, description) for: "" (the installed quorumkv), a path to a quorumkv
    script (`.py`: run with the replicas' Python), or `rev:REV[+WRAPPER.py]`: a git revision
    of this repository's service/ exported to the work dir (optionally run through a wrapper
    such as bench/experiments/qkv_tuned.py)."""
    python = interpreter.python
    if spec.startswith("rev:"):
        rev, _, wrapper = spec[4:].partition("+")
        rev = rev or "HEAD"
        sha = git("rev-parse", "--verify", rev + "^{commit}")
        if not sha:
            sys.exit(f"unknown git revision {rev!r}")
        dest = workdir / f"src-{sha[:12]}"
        if not dest.exists():
            dest.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "service"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        if wrapper:
            wrapper = str(Path(wrapper).resolve())
        command = [python, wrapper] if wrapper else [python, "-m", "quorumkv"]
        return (command, _pythonpath(dest / "service", interpreter),
                f"git {sha[:12]} ({rev})" + (f" via {wrapper}" if wrapper else ""))
    path = spec or default
    if not path:
        sys.exit("quorumkv not found: pip install -e . (or --quorumkv PATH / --qkv-rev REV)")
    description = path + (" (working tree)" if path == default else "")
    if path.endswith(".py"):
        return [python, path], _pythonpath(REPO / "service", interpreter), description
    if interpreter.path and path == default:  # the venv's script, on another interpreter
        return ([python, "-m", "quorumkv"], _pythonpath(REPO / "service", interpreter),
                description)
    return [path], {}, description


def _pythonpath(source: Path, interpreter: Interpreter) -> dict[str, str]:
    """The environment that has `interpreter` import quorumkv from `source`."""
    return {"PYTHONPATH": os.pathsep.join([str(source), *interpreter.path])}


def port_free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http_call(method: str, hostport: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def prefill(cluster: Cluster, keyspace: int, value_size: int, workers: int = 16) -> float:
    """PUT every key of the keyspace once (so that reads hit), through all members."""
    targets = cluster.targets("all")  # type: ignore[attr-defined]
    value = (b"0123456789abcdef" * (value_size // 16 + 1))[:value_size]
    local = threading.local()
    t0 = time.time()

    def conn() -> http.client.HTTPConnection:
        if not hasattr(local, "c"):
            host, port = targets[threading.get_ident() % len(targets)].rsplit(":", 1)
            local.c = http.client.HTTPConnection(host, int(port), timeout=15)
        return local.c

    def put(i: int) -> bool:
        method, path, body, headers = cluster.put_request(  # type: ignore[attr-defined]
            b"key-%08d" % i, value)
        for _attempt in range(5):
            try:
                c = conn()
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                r.read()
                if r.status in (200, 201):
                    return True
                time.sleep(0.05)
            except (OSError, http.client.HTTPException):
                local.__dict__.pop("c", None)
                time.sleep(0.05)
        return False

    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        failed = sum(1 for ok in ex.map(put, range(keyspace), chunksize=64) if not ok)
    if failed:
        raise RuntimeError(f"{cluster.name}: prefill failed for {failed} keys")
    elapsed = time.time() - t0
    log(f"{cluster.name}: prefilled {keyspace} keys in {elapsed:.1f} s "
        f"({keyspace / elapsed:.0f}/s, python client)")
    return elapsed


# -------------------------------------------------------------------------------------- wrk
def run_wrk(script: str, targets: list[str], conns: int, threads: int, duration: float,
            opts: argparse.Namespace, run_id: str, read_share: float = 0.5) -> dict[str, Any]:
    env = dict(os.environ, BENCH_TARGETS=",".join(targets), BENCH_KEYSPACE=str(opts.keyspace),
               BENCH_VALUE=str(opts.value_size), BENCH_RUN=run_id,
               BENCH_SEED=str(secrets.randbelow(1 << 30)), BENCH_READ_SHARE=str(read_share))
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration:g}s",
           "--timeout", f"{opts.timeout:g}s", "-s", str(LUA / script), f"http://{targets[0]}/"]
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=LUA)
        deadline = time.time() + duration + 60
        while True:
            pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                raise RuntimeError(f"wrk did not finish: {cmd}")
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    m = re.search(r"^WRKJSON (\{.*\})$", text, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    res = json.loads(m.group(1))
    res["wrk_cpu_s"] = rusage.ru_utime + rusage.ru_stime
    return res


def measure(cluster: Cluster, others: set[int], workload: str, rnd: int,
            opts: argparse.Namespace, duration: float, record: bool = True) -> dict[str, Any]:
    etcd_script, qkv_script, conns, threads = WORKLOADS[workload]
    script = etcd_script if cluster.name == "etcd" else qkv_script
    conns = conns or opts.connections
    threads = threads or min(opts.threads, conns)
    mode = opts.etcd_target if cluster.name == "etcd" else opts.qkv_target
    if conns == 1 or workload in AT_HOME:
        mode = "leader"  # etcd's leader (one connection: its best case), QuorumKV's home
    targets = cluster.targets(mode)  # type: ignore[attr-defined]
    cluster.check_alive()
    la0 = loadavg()
    table0 = proc_table()
    ours = descendants(table0, cluster.pids)
    busy0 = cpu_busy_seconds()
    t0 = time.time()
    run_id = f"r{rnd}{secrets.token_hex(3)}"
    res = run_wrk(script, targets, conns, threads, duration, opts, run_id,
                  read_share=READ_SHARE.get(workload, 0.5))
    wall = time.time() - t0
    busy1 = cpu_busy_seconds()
    table1 = proc_table()
    cluster.check_alive()
    ours |= descendants(table1, cluster.pids)
    our_cpu = sum(table1[p][2] - table0[p][2] for p in ours if p in table0 and p in table1)
    foreign = (busy1 - busy0) - our_cpu - res["wrk_cpu_s"]
    top_foreign = sorted(((table1[p][2] - (table0[p][2] if p in table0 else 0.0), table1[p][1])
                          for p in table1 if p not in ours and p not in others
                          and p != os.getpid()), reverse=True)[:3]
    secs = res["duration_us"] / 1e6
    row = {
        "system": cluster.name, "workload": workload, "round": rnd, "script": script,
        "connections": conns, "threads": threads, "targets": targets,
        "rps": round(res["ok"] / secs, 1),
        "rps_all": round(res["requests"] / secs, 1),
        "p50_ms": res["lat_p50_us"] / 1000, "p90_ms": res["lat_p90_us"] / 1000,
        "p99_ms": res["lat_p99_us"] / 1000, "p999_ms": res["lat_p99.9_us"] / 1000,
        "max_ms": res["lat_max_us"] / 1000, "mean_ms": round(res["lat_mean_us"] / 1000, 3),
        "ok": res["ok"], "bad": res["bad"], "miss": res["miss"],
        "bad_codes": res["bad_codes"], "bad_sample": res["bad_sample"],
        "socket_errors": {k: res[f"err_{k}"] for k in ("connect", "read", "write", "timeout")},
        "server_cpu_cores": round(our_cpu / wall, 2),
        "server_cpu_ms_per_op": round(1000 * our_cpu / res["ok"], 3) if res["ok"] else None,
        "wrk_cpu_cores": round(res["wrk_cpu_s"] / wall, 2),
        "foreign_cpu_cores": round(max(0.0, foreign) / wall, 2),
        "top_foreign": [f"{name}:{cpu / wall:.2f}" for cpu, name in top_foreign if cpu > 0.05],
        "loadavg_before": la0, "loadavg_after": loadavg(),
    }
    flag = ""
    if res["bad"] or any(row["socket_errors"].values()):
        flag = f"  !! bad={res['bad']} {res['bad_codes']} errors={row['socket_errors']}"
        if res["bad_sample"]:
            flag += f" sample={res['bad_sample'][:120]!r}"
    if res["miss"]:
        flag += f"  (misses: {res['miss']})"
    if record:
        log(f"round {rnd} {cluster.name:8s} {workload:10s} {row['rps']:9.0f} ok/s  "
            f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
            f"cpu: servers {row['server_cpu_cores']:.2f} "
            f"({row['server_cpu_ms_per_op'] or 0:.3f} ms/op) wrk {row['wrk_cpu_cores']:.2f} "
            f"other {row['foreign_cpu_cores']:.2f}{flag}")
    return row


# ---------------------------------------------------------------------------------- profile
def profile_run(qkv: QuorumKV, others: set[int], workload: str, opts: argparse.Namespace,
                outdir: Path) -> dict[str, Any]:
    """One extra QuorumKV run with py-spy recording every replica (not counted in results)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    venv_spy = REPO / ".venv" / "bin" / "py-spy"
    if venv_spy.exists():
        pyspy = str(venv_spy)
    if not Path(pyspy).exists():
        raise RuntimeError("py-spy not found (pip install py-spy into the venv)")
    outdir.mkdir(parents=True, exist_ok=True)
    spies = []
    rec = max(2.0, opts.duration - 1)
    for i, pid in enumerate(sorted(qkv.replica_pids())):
        out = outdir / f"{workload}-replica{i}.txt"
        spies.append((subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--duration", f"{int(rec)}", "--rate",
             str(opts.profile_rate), "--format", "raw", "--output", str(out), "--nonblocking",
             "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
    time.sleep(0.5)
    row = measure(qkv, others, workload, 0, opts, opts.duration, record=False)
    for p, _ in spies:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    log(f"profiled {workload}: {row['rps']:.0f} ok/s under py-spy -> {outdir}")
    return row


def _frame_func(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: aggregate a function's lines."""
    return re.sub(r":\d+\)$", ")", frame)


def _frame_area(frame: str) -> str:
    m = re.search(r"\(([^():]+?)(?::\d+)?\)$", frame)
    path = m.group(1) if m else frame
    if path.startswith("quorumkv/"):
        return path.removesuffix(".py")
    return path.split("/")[0].removesuffix(".py")


def summarize_profile(outdir: Path, top: int = 20, rate: int = 50,
                      seconds: float = 0.0) -> str:
    lines = ["# py-spy profile of the QuorumKV replicas under load", "",
             "Samples are taken only while a thread is running (not idle); a thread that is "
             f"busy all the time gives {rate} samples/s. Frames are aggregated per function.",
             ""]
    for f in sorted(outdir.glob("*.txt")):
        self_t: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        areas: Counter[str] = Counter()
        per_thread: Counter[str] = Counter()
        total = 0
        for line in f.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            cnt = int(n)
            total += cnt
            frames = stack.split(";")
            if frames and frames[0].startswith(("thread (", "process ")):
                thread = frames[0]
                frames = frames[1:]
                if frames and frames[0].startswith("thread ("):
                    thread = frames[0]
                    frames = frames[1:]
                per_thread[thread] += cnt
            if not frames:
                continue
            funcs = [_frame_func(fr) for fr in frames]
            self_t[funcs[-1]] += cnt
            areas[_frame_area(frames[-1])] += cnt
            for fn in set(funcs):
                incl[fn] += cnt
        if not total:
            continue
        busy = f", about {total / (rate * seconds):.2f} threads busy" if seconds else ""
        lines += [f"## {f.stem}: {total} samples{busy}", ""]
        if per_thread:
            lines += ["threads: " + ", ".join(f"{t} {100 * c / total:.0f}%"
                                              for t, c in per_thread.most_common(4)), ""]
        lines += ["self time by area:", "```"]
        lines += [f"{100 * c / total:5.1f}%  {a}" for a, c in areas.most_common(12)]
        lines += ["```", "", "self time by function:", "```"]
        lines += [f"{100 * c / total:5.1f}%  {fr}" for fr, c in self_t.most_common(top)]
        lines += ["```", "", "inclusive (QuorumKV functions):", "```"]
        lines += [f"{100 * c / total:5.1f}%  {fr}" for fr, c in incl.most_common()
                  if "(quorumkv/" in fr][:top]
        lines += ["```", ""]
    text = "\n".join(lines)
    (outdir / "summary.md").write_text(text)
    return text


# ---------------------------------------------------------------------------------- reports
def median_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["workload"], r["system"])].append(r)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (w, s), rs in groups.items():
        out[w][s] = {
            "rounds": len(rs),
            "rps": round(statistics.median(r["rps"] for r in rs), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 3),
            "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
            "bad": sum(r["bad"] for r in rs), "miss": sum(r["miss"] for r in rs),
            "server_cpu_cores": round(statistics.median(r["server_cpu_cores"] for r in rs), 2),
            "server_cpu_ms_per_op": round(statistics.median(
                r["server_cpu_ms_per_op"] or 0.0 for r in rs), 3),
            "foreign_cpu_cores": round(statistics.median(r["foreign_cpu_cores"] for r in rs), 2),
        }
    return out


def round_ratios(rows: list[dict[str, Any]], workload: str, metric: str) -> list[float]:
    """QuorumKV / etcd in each round both ran `workload`: the two ran back to back, so these
    pairs see the same host speed, which moves by up to ±15% between rounds here."""
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r["workload"] == workload:
            by_round[r["round"]][r["system"]] = r[metric]
    return [round(pair["quorumkv"] / pair["etcd"], 3) for _, pair in sorted(by_round.items())
            if pair.get("etcd") and "quorumkv" in pair]


def verdicts(med: dict[str, dict[str, dict[str, Any]]],
             rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target judged on the ratio of the two systems' medians; the ratios of each round
    go with it, to show how far the verdict is from the noise."""
    out = []
    for w, targets in TARGETS.items():
        m = med.get(w, {})
        e, q = m.get("etcd"), m.get("quorumkv")
        for metric, cmp, factor, desc in targets:
            v: dict[str, Any] = {"workload": w, "metric": metric, "target": f"{cmp} {factor}x",
                                 "description": desc, "ratio": None, "pass": None,
                                 "round_ratios": round_ratios(rows, w, metric)}
            if e and q and e[metric]:
                ratio = q[metric] / e[metric]
                v["ratio"] = round(ratio, 3)
                v["pass"] = ratio >= factor if cmp == ">=" else ratio <= factor
            out.append(v)
    return out


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    med, env = result["medians"], result["environment"]
    noise = result["noise"]
    L = ["# QuorumKV vs etcd — benchmark results", "",
         f"Generated by `bench/run.py` on {env['finished']} (git {env['git_commit'][:10]}"
         f"{' + local changes' if env['git_dirty'] else ''}). "
         "Median of the rounds; throughput counts successful operations only.", "",
         f"**Load:** {noise['verdict']}. Load average before the run "
         f"{' / '.join(f'{x:.2f}' for x in noise['loadavg_before'])}, after "
         f"{' / '.join(f'{x:.2f}' for x in noise['loadavg_after'])}; CPU busy before start "
         f"{noise['idle_busy_cores']:.2f} of {env['cpus']} cores; CPU used by other processes "
         f"during the measured runs: median {noise['foreign_cores_median']:.2f}, max "
         f"{noise['foreign_cores_max']:.2f} cores.", ""]
    if "host_speed" in env:
        speed = env["host_speed"]
        L += [f"**Host speed** (before the runs): a Python loop step "
              f"{speed['python_loop_step_ns']} ns, a pipe round trip between two processes "
              f"{speed['pipe_round_trip_us']} µs. Compare runs only at similar figures: "
              "QuorumKV passes each operation between processes, so slow wake-ups cost it "
              "more than etcd (bench/README.md, eleventh pass).", ""]
    if noise["heavy_processes"]:
        L += ["Other heavy processes seen: " + "; ".join(
            f"`{h[:80]}`" for h in noise["heavy_processes"][:5]), ""]
    L += ["| workload | etcd | ops/s | p50 ms | p99 ms | CPU ms/op | QuorumKV | ops/s | p50 ms "
          "| p99 ms | CPU ms/op |",
          "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for w, m in med.items():
        e, q = m.get("etcd"), m.get("quorumkv")
        label, elabel, qlabel = LABELS[w]

        def cells(x: dict[str, Any] | None) -> str:
            if not x:
                return "– | – | – | –"
            return (f"{x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                    f"{x['server_cpu_ms_per_op']:.3f}")

        L.append(f"| {label} | {elabel} | {cells(e)} | {qlabel} | {cells(q)} |")
    variants = sorted({s for m in med.values() for s in m if s.startswith("quorumkv:")})
    if variants:
        L += ["", "## Variants (A/B against the QuorumKV baseline, same rounds)", "",
              "| workload | system | ops/s | p50 ms | p99 ms | CPU ms/op | ops/s vs baseline "
              "| CPU/op vs baseline |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for w, m in med.items():
            base = m.get("quorumkv")
            for name in ["quorumkv", *variants]:
                x = m.get(name)
                if not x:
                    continue
                rel = f"{x['rps'] / base['rps']:.2f}x" if base and base["rps"] else "–"
                cpu = (f"{x['server_cpu_ms_per_op'] / base['server_cpu_ms_per_op']:.2f}x"
                       if base and base.get("server_cpu_ms_per_op") else "–")
                L.append(f"| {w} | {name} | {x['rps']:.0f} | {x['p50_ms']:.2f} | "
                         f"{x['p99_ms']:.2f} | {x['server_cpu_ms_per_op']:.3f} | {rel} | {cpu} |")
    L += ["", "## Targets", "",
          "| workload | target | ratio QuorumKV / etcd (of the medians; each round's) | verdict |",
          "| --- | --- | ---: | --- |"]
    for v in result["verdicts"]:
        ratio = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}x"
        if v.get("round_ratios"):
            ratio += " (rounds " + ", ".join(f"{r:.2f}" for r in v["round_ratios"]) + ")"
        verdict = ("n/a" if v["pass"] is None else "PASS" if v["pass"] else "FAIL")
        if v["pass"] is not None and noise["noisy"]:
            verdict += " (noisy)"
        L.append(f"| {LABELS[v['workload']][0]} | {v['description']} | {ratio} | {verdict} |")
    p = result["parameters"]
    L += ["", "## Setup", "",
          f"- wrk {env['wrk_version']}, {p['connections']} connections / {p['threads']} threads "
          f"(1-connection runs: -c1 -t1), {p['duration_s']} s per run, {p['rounds']} rounds, "
          f"interleaved (etcd and QuorumKV alternate who goes first), {p['value_size']}-byte "
          f"values, keyspace {p['keyspace']} keys pre-filled, random keys; create-only "
          "uses a fresh key per request.",
          f"- etcd {env['etcd_version']} (Debian `etcd-server`), 3 members on 127.0.0.1, JSON "
          f"gateway (/v3/kv/put, /v3/kv/range, /v3/kv/txn); connections spread over "
          f"{'all members' if p['etcd_target'] == 'all' else 'the leader only'} "
          "(1-connection runs: the leader).",
          f"- QuorumKV ({env.get('quorumkv_source') or '?'}): 3 `quorumkv {p['qkv_mode']}` "
          "replicas on 127.0.0.1; connections spread "
          f"over {'all replicas' if p['qkv_target'] == 'all' else 'the home, replica 0'} "
          "(1-connection runs: the home, replica 0); they run on "
          f"{env.get('quorumkv_python') or 'the venv Python'}.",
          f"- Data directories on {env['data_fs']} ({env['data_dir']}), fsync real (etcd WAL "
          "fsync; QuorumKV log fdatasync per commit).",
          f"- {env['cpus']} CPUs; servers, wrk and anything else share them.", "",
          "",
          "CPU ms/op: CPU time of all three server processes per successful operation (from "
          "/proc, summed over the members): the figure least disturbed by other load on the "
          "machine. On 2 cores, throughput can at best reach about (2 − wrk's share) / "
          "(CPU ms/op).", "",
          "## All runs", "",
          "| round | system | workload | ok/s | p50 ms | p99 ms | bad | server CPU | other CPU |",
          "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["runs"]:
        L.append(f"| {r['round']} | {r['system']} | {r['workload']} | {r['rps']:.0f} | "
                 f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['bad']} | "
                 f"{r['server_cpu_cores']:.2f} | {r['foreign_cpu_cores']:.2f} |")
    path.write_text("\n".join(L) + "\n")


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def git(*args: str) -> str:
    r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return r.stdout.strip()


# ------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="etcd,quorumkv",
                    help="comma-separated: etcd, quorumkv (default both)")
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS,
                    help=f"comma-separated of {','.join(WORKLOADS)} (default {DEFAULT_WORKLOADS})")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds of unrecorded put+get per system before round 1")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=16,
                    help="wrk threads; assigned round-robin to the members (default 16)")
    ap.add_argument("--keyspace", type=int, default=10000)
    ap.add_argument("--value-size", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=10.0, help="wrk request timeout, s")
    ap.add_argument("--etcd-target", choices=("all", "leader"), default="all",
                    help="etcd connections spread over all members (default) or the leader")
    ap.add_argument("--qkv-target", choices=("all", "leader"), default="all",
                    help="QuorumKV connections over all replicas (default) or the home, "
                         "replica 0")
    ap.add_argument("--qkv-mode", choices=("serve", "local"), default="serve",
                    help="3 `quorumkv serve` processes (default) or one `quorumkv local`")
    ap.add_argument("--quorumkv", default=None, help="path of the quorumkv script")
    ap.add_argument("--python", default="auto", metavar="auto|venv|system|PATH",
                    help="the replicas' interpreter: the system's python3 (the image's) with "
                         "the venv's packages when it can, else the venv's (default: auto)")
    ap.add_argument("--qkv-rev", default=None, metavar="REV",
                    help="benchmark this git revision of service/ (exported to the work dir) "
                         "instead of the installed working tree, e.g. HEAD")
    ap.add_argument("--etcd", default=None, help="path of the etcd binary")
    ap.add_argument("--data-dir", default="/var/tmp",
                    help="parent of the temporary data directories (must be a real disk)")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    ap.add_argument("--markdown", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only; write no result files")
    ap.add_argument("--noise-threshold", type=float, default=0.25,
                    help="CPU cores used by other processes above which numbers are 'noisy'")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="wait up to this many seconds for the machine to become idle")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="after the rounds, one py-spy-recorded QuorumKV run per workload")
    ap.add_argument("--profile-rate", type=int, default=50, help="py-spy samples/s")
    ap.add_argument("--variant", action="append", default=[],
                    metavar="NAME=PATH|rev:REV[+WRAPPER.py][@VAR=VALUE;...]",
                    help="also run another QuorumKV build (a quorumkv script, optionally with "
                         "environment variables) interleaved with the others, reported as "
                         "quorumkv:NAME: A/B-test a change on the same noisy machine")
    ap.add_argument("--hold", action="store_true",
                    help="keep the clusters running at the end until Ctrl-C (for profiling)")
    opts = ap.parse_args()
    opts.system_list = [s.strip() for s in opts.systems.split(",") if s.strip()]
    opts.workload_list = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    for w in opts.workload_list:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    for s in opts.system_list:
        if s not in ("etcd", "quorumkv"):
            ap.error(f"unknown system {s!r}")
    return opts


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    opts = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    ensure_tools(opts.no_install)
    etcd_bin = opts.etcd or shutil.which("etcd") or "/usr/bin/etcd"
    qkv_bin = opts.quorumkv or (str(REPO / ".venv" / "bin" / "quorumkv")
                                if (REPO / ".venv" / "bin" / "quorumkv").exists()
                                else shutil.which("quorumkv"))

    parent = Path(opts.data_dir)
    parent.mkdir(parents=True, exist_ok=True)
    fstype = fs_type(parent)
    if fstype in ("tmpfs", "ramfs"):
        sys.exit(f"{parent} is on {fstype}: fsync would be free; use --data-dir on a real disk")
    workdir = Path(tempfile.mkdtemp(prefix="qkv-bench-", dir=parent))
    log(f"data and logs in {workdir} ({fstype})")

    heavy0 = heavy_processes()
    idle = busy_cores_sample(2.0)
    waited = 0.0
    while (idle > opts.noise_threshold or heavy0) and waited < opts.wait_quiet:
        log(f"machine busy ({idle:.2f} cores used, {len(heavy0)} heavy processes); waiting")
        time.sleep(15)
        waited += 17
        heavy0 = heavy_processes()
        idle = busy_cores_sample(2.0)
    la_before = loadavg()
    speed = host_speed()
    log(f"load average {la_before}, CPU busy {idle:.2f}/{NCPU} cores, "
        f"heavy processes: {len(heavy0)}; host speed: Python loop step "
        f"{speed['python_loop_step_ns']} ns, pipe round trip {speed['pipe_round_trip_us']} µs")
    for h in heavy0[:5]:
        log(f"  busy: {h[:150]}")

    clusters: list[Cluster] = []
    rows: list[dict[str, Any]] = []
    profile_rows: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.UTC)
    git_commit = git("rev-parse", "HEAD")
    git_dirty = bool(git("status", "--porcelain", "--", "service", "pyproject.toml"))
    try:
        if "etcd" in opts.system_list:
            etcd = Etcd(workdir, etcd_bin)
            clusters.append(etcd)
            etcd.start()
            etcd.smoke()
        qkv_source = ""
        interpreter = None
        if "quorumkv" in opts.system_list or opts.variant:
            interpreter = replica_interpreter(opts.python)
            log(f"quorumkv replicas run on {interpreter.description}")
        if "quorumkv" in opts.system_list:
            assert interpreter is not None
            cmd, cenv, qkv_source = qkv_command(
                f"rev:{opts.qkv_rev}" if opts.qkv_rev else (opts.quorumkv or ""), qkv_bin,
                workdir, interpreter)
            log(f"quorumkv: {qkv_source}")
            qkv = QuorumKV(workdir, cmd, opts.qkv_mode, env=cenv)
            clusters.append(qkv)
            qkv.start()
            qkv.smoke()
        for spec in opts.variant:
            name, _, rest = spec.partition("=")
            source, _, envspec = rest.partition("@")
            assert interpreter is not None
            cmd, venv, desc = qkv_command(source, qkv_bin, workdir, interpreter)
            venv.update(kv.split("=", 1) for kv in envspec.split(";") if "=" in kv)
            log(f"quorumkv:{name}: {desc}")
            var = QuorumKV(workdir, cmd, opts.qkv_mode, name=f"quorumkv:{name}", env=venv)
            clusters.append(var)
            var.start()
            var.smoke()
        all_pids = set().union(*(descendants(proc_table(), c.pids) for c in clusters))
        for c in clusters:
            prefill(c, opts.keyspace, opts.value_size)
        if opts.warmup > 0:
            for c in clusters:
                for w in ("put", "get"):
                    measure(c, all_pids, w, 0, opts, opts.warmup, record=False)
            log(f"warmed up ({opts.warmup:g} s put + get per system)")
        for rnd in range(1, opts.rounds + 1):
            order = clusters if rnd % 2 else list(reversed(clusters))
            for w in opts.workload_list:
                for c in order:
                    rows.append(measure(c, all_pids, w, rnd, opts, opts.duration))
        if opts.profile:
            q = [c for c in clusters if c.name == "quorumkv"]
            if q:
                pdir = Path(opts.profile)
                for w in opts.workload_list:
                    profile_rows.append(profile_run(q[0], all_pids, w, opts, pdir))
                print(summarize_profile(pdir, rate=opts.profile_rate,
                                        seconds=max(2.0, opts.duration - 1)))
        if opts.hold:
            for c in clusters:
                log(f"{c.name}: pids {sorted(c.pids)} targets "
                    f"{c.targets('all')}")  # type: ignore[attr-defined]
            log("holding the clusters; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        for c in clusters:
            c.stop()
        if not opts.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")

    heavy1 = heavy_processes()
    foreign = [r["foreign_cpu_cores"] for r in rows] or [0.0]
    noisy = (idle > opts.noise_threshold or statistics.median(foreign) > opts.noise_threshold
             or max(foreign) > 2 * opts.noise_threshold)
    noise = {
        "loadavg_before": la_before, "loadavg_after": loadavg(),
        "idle_busy_cores": round(idle, 2),
        "foreign_cores_median": round(statistics.median(foreign), 2),
        "foreign_cores_max": round(max(foreign), 2),
        "heavy_processes": sorted(set(heavy0 + heavy1)),
        "noisy": noisy,
        "verdict": ("NOISY — other processes used the CPUs during the runs; do not trust "
                    "the ratios" if noisy else "quiet machine (numbers usable)"),
    }
    med = median_rows(rows)
    result = {
        "environment": {
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "cpus": NCPU,
            "kernel": os.uname().release,
            "etcd_version": tool_version([etcd_bin, "--version"]).replace("etcd Version: ", ""),
            "wrk_version": tool_version(["wrk", "-v"]).split(" [")[0].replace("wrk ", ""),
            "git_commit": git_commit, "git_dirty": git_dirty,
            "quorumkv_source": qkv_source, "variants": opts.variant,
            "quorumkv_python": interpreter.description if interpreter else None,
            "data_dir": str(workdir), "data_fs": fstype, "host_speed": speed,
        },
        "parameters": {
            "systems": opts.system_list, "workloads": opts.workload_list,
            "rounds": opts.rounds, "duration_s": opts.duration, "connections": opts.connections,
            "threads": opts.threads, "keyspace": opts.keyspace, "value_size": opts.value_size,
            "etcd_target": opts.etcd_target, "qkv_target": opts.qkv_target,
            "qkv_mode": opts.qkv_mode, "timeout_s": opts.timeout,
        },
        "noise": noise,
        "medians": med,
        "verdicts": verdicts(med, rows),
        "runs": rows,
        "profile_runs": profile_rows,
    }
    print()
    print(f"{'workload':12s} {'system':16s} {'ok/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'CPU ms/op':>9s}")
    for w, m in med.items():
        for s, x in m.items():
            print(f"{w:12s} {s:16s} {x['rps']:9.0f} {x['p50_ms']:8.2f} {x['p99_ms']:8.2f} "
                  f"{x['server_cpu_ms_per_op']:9.3f}")
    for v in result["verdicts"]:
        if v["ratio"] is not None:
            rounds = ", ".join(f"{r:.2f}" for r in v["round_ratios"])
            print(f"{v['description']:45s} ratio {v['ratio']:.2f}  "
                  f"{'PASS' if v['pass'] else 'FAIL'}  (rounds {rounds})")
    print(f"load: {noise['verdict']} (foreign CPU median {noise['foreign_cores_median']}, "
          f"max {noise['foreign_cores_max']} cores; loadavg before {la_before})")
    if not opts.no_write:
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        write_markdown(Path(opts.markdown), result)
        log(f"wrote {out} and {opts.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
