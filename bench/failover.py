#!/usr/bin/env python3
"""Failover, measured: what clients see when a member is killed (-9) or paused (SIGSTOP).

For each system (QuorumKV: 3 `quorumkv serve` replicas; etcd: 3 members of Debian's
`etcd-server`, through its JSON gateway) and each fault, a fresh cluster gets a steady write
load from client threads spread over the members, as behind a Kubernetes Service: a client
whose request fails (connection refused, reset, a 5xx, or no answer within --client-timeout)
counts the failure and moves on to the next member at once. After --before seconds one member
is killed or paused (etcd: its leader, the member whose loss matters; QuorumKV has no leader,
so replica 0), and the load runs --after seconds more; a paused member is resumed after
--pause-for seconds.

Reported per run, from every request's start and end time:
- no-write window: the longest stretch after the fault in which no write completed anywhere;
- recovered after: from the fault until the successful-write rate is back to at least 80% of
  its rate before the fault (in 100 ms buckets, for 5 buckets in a row);
- failed requests (errors and client timeouts) and the slowest successful write after the fault;
- after a pause: the requests made after the member resumed that failed, and the write rate
  over the 3 s after it, as a share of the rate before the fault (what its return costs);
- the rate before the fault, and a timeline of successful writes per 100 ms around it.

Standard library only (it reuses run.py's cluster classes):
    python3 bench/failover.py                    # both systems, kill and pause, 3 rounds
    python3 bench/failover.py --systems quorumkv --faults pause --rounds 1
Writes bench/results/failover.json and bench/FAILOVER.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from run import BENCH, REPO, Cluster, Etcd, QuorumKV, ensure_tools, fs_type, git, log, qkv_command

BUCKET = 0.1  # seconds per timeline bucket
Record = tuple[float, float, str]
RECOVERED_SHARE = 0.8  # of the rate before the fault
RECOVERED_BUCKETS = 5  # in a row
RESUME_WINDOW = 3.0  # seconds after a paused member resumes


class Load:
    """Client threads writing random keys; each request's (start, end, outcome) is recorded."""

    def __init__(self, cluster: Cluster, clients: int, keyspace: int, timeout: float) -> None:
        self.cluster = cluster
        self.targets: list[str] = cluster.targets("all")  # type: ignore[attr-defined]
        self.clients = clients
        self.keyspace = keyspace
        self.timeout = timeout
        self.stop = threading.Event()
        # (start, end, outcome): "ok", an HTTP status, or the exception's name
        self.records: list[list[Record]] = [[] for _ in range(clients)]
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> list[Record]:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        return sorted(r for rec in self.records for r in rec)

    def _client(self, index: int) -> None:
        member = index % len(self.targets)
        conn: http.client.HTTPConnection | None = None
        value = os.urandom(32).hex().encode()
        rng = random.Random(index)
        while not self.stop.is_set():
            key = b"fo-%06d" % rng.randrange(self.keyspace)
            method, path, body, headers = self.cluster.put_request(  # type: ignore[attr-defined]
                key, value)
            started = time.monotonic()
            try:
                if conn is None:
                    host, port = self.targets[member].rsplit(":", 1)
                    conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                outcome = "ok" if resp.status in (200, 201) else str(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            self.records[index].append((started, time.monotonic(), outcome))
            if outcome != "ok":  # fail over to the next member, as a client behind a Service would
                if conn is not None:
                    conn.close()
                conn = None
                member = (member + 1) % len(self.targets)
                if self.stop.wait(0.01):
                    break
        if conn is not None:
            conn.close()


def analyse(records: list[Record], fault_at: float, start: float, end: float,
            resumed_at: float | None = None) -> dict[str, Any]:
    """The figures of one run; times relative to the fault, in seconds. After a pause
    (`resumed_at`), also what the member's return cost: the requests made after it that
    failed, and the write rate over the RESUME_WINDOW after it, as a share of the rate
    before the fault."""
    done = [e - fault_at for _, e, outcome in records if outcome == "ok"]
    before = [t for t in done if start - fault_at + 1 <= t < 0]  # the first second: warm-up
    rate_before = len(before) / max(1e-9, fault_at - start - 1)
    after = sorted(t for t in done if t >= 0)
    gaps = [b - a for a, b in zip([0.0, *after], [*after, end - fault_at], strict=True)]
    buckets = [0] * int((end - fault_at) / BUCKET)
    for t in after:
        if int(t / BUCKET) < len(buckets):
            buckets[int(t / BUCKET)] += 1
    target = RECOVERED_SHARE * rate_before * BUCKET
    recovered = None
    for i in range(len(buckets) - RECOVERED_BUCKETS + 1):
        if all(b >= target for b in buckets[i:i + RECOVERED_BUCKETS]):
            recovered = round(i * BUCKET, 1)
            break
    failed = Counter(outcome for _, e, outcome in records if outcome != "ok" and e >= fault_at)
    slowest = max((e - s for s, e, outcome in records if outcome == "ok" and e >= fault_at),
                  default=0.0)
    timeline = [0] * 20 + buckets  # 2 s before to the end, per 100 ms
    for t in done:
        if -2 <= t < 0:
            timeline[int((t + 2) / BUCKET)] += 1
    resume: dict[str, Any] = {}
    if resumed_at is not None:
        window = [t for t in after if 0 <= t + fault_at - resumed_at < RESUME_WINDOW]
        resume = {
            "resumed_after_s": round(resumed_at - fault_at, 3),
            "failed_after_resume": sum(1 for s, _, outcome in records
                                       if outcome != "ok" and s >= resumed_at),
            "rate_after_resume_share": round(
                len(window) / RESUME_WINDOW / max(1e-9, rate_before), 2),
        }
    return {
        "rate_before": round(rate_before),
        "no_write_window_s": round(max(gaps, default=0.0), 3),
        "recovered_after_s": recovered,
        "failed_requests": sum(failed.values()),
        "failed_by_kind": dict(failed.most_common()),
        "slowest_ok_s": round(slowest, 3),
        "ok_after": len(after),
        "timeline_per_100ms": timeline,
        **resume,
    }


def fault_pid(cluster: Cluster) -> tuple[int, str]:
    if isinstance(cluster, Etcd):
        return cluster.procs[cluster.leader_index].pid, f"the leader (e{cluster.leader_index})"
    return cluster.procs[0].pid, "replica 0"


def run_once(make: Any, fault: str, opts: argparse.Namespace) -> dict[str, Any]:
    cluster: Cluster = make()
    try:
        cluster.start()  # type: ignore[attr-defined]
        load = Load(cluster, opts.clients, opts.keyspace, opts.client_timeout)
        pid, who = fault_pid(cluster)
        start = time.monotonic()
        load.start()
        time.sleep(opts.before)
        fault_at = time.monotonic()
        os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        resumed_at = None
        if fault == "pause":
            time.sleep(opts.pause_for)
            os.kill(pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            time.sleep(max(0.0, opts.after - opts.pause_for))
        else:
            time.sleep(opts.after)
        end = time.monotonic()
        records = load.finish()
    finally:
        for p in cluster.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
        cluster.stop()
    result = {"system": cluster.name, "fault": fault, "member": who,
              **analyse(records, fault_at, start, end, resumed_at)}
    resume = "" if resumed_at is None else (
        f"  after resume: {result['failed_after_resume']} failed, "
        f"{result['rate_after_resume_share']:.2f} of the rate for {RESUME_WINDOW:g} s")
    log(f"{cluster.name:8s} {fault:5s} {who:24s} before {result['rate_before']:5d}/s  "
        f"no-write window {result['no_write_window_s']:6.3f} s  recovered after "
        f"{result['recovered_after_s']} s  failed {result['failed_requests']:4d}  "
        f"slowest ok {result['slowest_ok_s']:.3f} s  {result['failed_by_kind']}{resume}")
    return result


def median_of(runs: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in runs if r[field] is not None]
    return round(statistics.median(values), 3) if len(values) == len(runs) else None


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    o = result["options"]
    lines = [
        "# Failover: QuorumKV vs etcd", "",
        f"Generated by `bench/failover.py` on {result['started']} (git {result['git'][:10]}). "
        f"{o['clients']} client threads writing random keys ({o['keyspace']}), spread over the "
        f"3 members; a failed request (error, 5xx, or no answer in {o['client_timeout']} s) "
        "moves its client to the next member. The fault hits etcd's leader and QuorumKV's "
        f"replica 0 after {o['before']} s; a pause lasts {o['pause_for']} s. "
        f"Median of {o['rounds']} rounds.", "",
        "| system | fault | writes/s before | no-write window s | recovered after s "
        "| failed requests | slowest ok write s | failed after resume "
        f"| write rate {RESUME_WINDOW:g} s after resume |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (system, fault), runs in result["summary"].items():
        rec = median_of(runs, "recovered_after_s")
        resume = "| – | – |" if fault != "pause" else (
            f"| {median_of(runs, 'failed_after_resume'):.0f} "
            f"| {median_of(runs, 'rate_after_resume_share')} of before |")
        lines.append(
            f"| {system} | {fault} | {median_of(runs, 'rate_before'):.0f} "
            f"| {median_of(runs, 'no_write_window_s')} "
            f"| {'not within the run' if rec is None else rec} "
            f"| {median_of(runs, 'failed_requests'):.0f} | {median_of(runs, 'slowest_ok_s')} "
            + resume)
    lines += ["", "No-write window: the longest time after the fault in which no write completed "
              "anywhere. Recovered after: until the write rate is back to 80% of the rate "
              "before the fault for 0.5 s. After resume (pauses): the requests made after the "
              "paused member resumed that failed, and the write rate over the "
              f"{RESUME_WINDOW:g} s after it, as a share of the rate before the fault.", "",
              "## Every run", "",
              "Timeline: successful writes per 100 ms, from 2 s before the fault (|) to "
              f"{o['after']:g} s after.", ""]
    for r in result["runs"]:
        t = r["timeline_per_100ms"]
        cells = " ".join(str(x) for x in t[:20]) + " | " + " ".join(str(x) for x in t[20:])
        lines += [f"- {r['system']} {r['fault']} of {r['member']}: no-write window "
                  f"{r['no_write_window_s']} s, recovered after {r['recovered_after_s']} s, "
                  f"{r['failed_requests']} failed {r['failed_by_kind']}", f"  `{cells}`"]
    path.write_text("\n".join(lines) + "\n")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="etcd,quorumkv", help="comma-separated (default both)")
    ap.add_argument("--faults", default="kill,pause", help="comma-separated: kill, pause")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=12, help="client threads (default 12)")
    ap.add_argument("--keyspace", type=int, default=1000)
    ap.add_argument("--client-timeout", type=float, default=5.0,
                    help="seconds a client waits for an answer before it moves on (default 5, "
                         "etcdctl's --command-timeout)")
    ap.add_argument("--before", type=float, default=4.0, help="seconds of load before the fault")
    ap.add_argument("--after", type=float, default=8.0, help="seconds of load after the fault")
    ap.add_argument("--pause-for", type=float, default=5.0, help="seconds a pause lasts")
    ap.add_argument("--data-dir", default="/var/tmp", help="parent of the data (a real disk)")
    ap.add_argument("--etcd", default=None, help="path of the etcd binary")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--no-write", action="store_true", help="print only; write no result files")
    opts = ap.parse_args()
    opts.system_list = [s for s in opts.systems.split(",") if s]
    opts.fault_list = [f for f in opts.faults.split(",") if f]
    if set(opts.system_list) - {"etcd", "quorumkv"} or set(opts.fault_list) - {"kill", "pause"}:
        ap.error("--systems takes etcd,quorumkv and --faults takes kill,pause")
    if opts.pause_for > opts.after:
        ap.error("--pause-for must not exceed --after")
    return opts


def main() -> int:
    opts = parse_args()
    ensure_tools(opts.no_install)
    etcd_bin = opts.etcd or shutil.which("etcd") or "/usr/bin/etcd"
    qkv_bin = (str(REPO / ".venv" / "bin" / "quorumkv")
               if (REPO / ".venv" / "bin" / "quorumkv").exists() else shutil.which("quorumkv"))
    parent = Path(opts.data_dir)
    if fs_type(parent) in ("tmpfs", "ramfs"):
        sys.exit(f"{parent} is a RAM file system: fsync would be free; use a real disk")
    workdir = Path(tempfile.mkdtemp(prefix="qkv-failover-", dir=parent))
    command, env, source = qkv_command("", qkv_bin, workdir)
    log(f"data and logs in {workdir}; quorumkv: {source}")
    makers = {"etcd": lambda n: Etcd(workdir / n, etcd_bin),
              "quorumkv": lambda n: QuorumKV(workdir / n, command, "serve", env=env)}
    started = dt.datetime.now(dt.UTC)
    runs = []
    try:
        for rnd in range(1, opts.rounds + 1):
            for fault in opts.fault_list:
                systems = opts.system_list if rnd % 2 else opts.system_list[::-1]
                for system in systems:
                    name = f"{system}-{fault}-{rnd}"
                    (workdir / name).mkdir()
                    runs.append(run_once(lambda s=system, n=name: makers[s](n), fault, opts))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        summary.setdefault((r["system"], r["fault"]), []).append(r)
    print()
    for (system, fault), group in summary.items():
        print(f"{system:8s} {fault:5s} median: no-write window "
              f"{median_of(group, 'no_write_window_s')} s, recovered after "
              f"{median_of(group, 'recovered_after_s')} s, failed "
              f"{median_of(group, 'failed_requests')}, slowest ok "
              f"{median_of(group, 'slowest_ok_s')} s" + (
                  f"; after resume: failed {median_of(group, 'failed_after_resume')}, "
                  f"{median_of(group, 'rate_after_resume_share')} of the rate"
                  if fault == "pause" else ""))
    if not opts.no_write:
        result = {"started": started.isoformat(timespec="seconds"), "git": git("rev-parse", "HEAD"),
                  "options": {k: v for k, v in vars(opts).items() if not k.endswith("_list")},
                  "runs": runs, "summary": summary}
        out = BENCH / "results" / "failover.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({**result, "summary": {f"{s} {f}": g for (s, f), g
                                                          in summary.items()}}, indent=1))
        write_markdown(BENCH / "FAILOVER.md", result)
        log(f"wrote {out} and {BENCH / 'FAILOVER.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
