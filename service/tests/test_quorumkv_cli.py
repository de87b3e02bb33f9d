"""The `quorumkv` command line as a newcomer meets it: the README's quick start (`quorumkv
local`, then `put`/`get`/`delete` against any replica), and a clear error with status 2,
touching nothing, for every bad flag."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from jepsen.procs import free_port

QUORUMKV = [sys.executable, "-m", "quorumkv"]


def cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*QUORUMKV, *args], input=stdin, capture_output=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free loopback ports, as `quorumkv local` needs."""
    for _ in range(50):
        base = free_port(["127.0.0.1"])
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


class LocalCluster:
    """`quorumkv local` as a user runs it, its output (and its replicas' logs) in a file."""

    def __init__(self, data_dir: Path, output: Path, base_port: int) -> None:
        self.output = output
        self.urls = [f"http://127.0.0.1:{base_port + i}" for i in range(3)]
        with output.open("ab") as out:
            self.proc = subprocess.Popen(
                [*QUORUMKV, "local", "--replicas", "3", "--base-port", str(base_port),
                 "--data-dir", str(data_dir)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "Try: quorumkv put" not in self.text():
            assert self.proc.poll() is None, f"quorumkv local exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready:\n{self.text()[-3000:]}"
            time.sleep(0.2)

    def replica_pid(self, node: str) -> int:
        """The pid of the `quorumkv serve` process `local` started for `node`."""
        for entry in Path("/proc").iterdir():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if parent == self.proc.pid and args[args.index(b"--node-id") + 1:][:1] == [
                    node.encode()]:
                return int(entry.name)
        raise AssertionError(f"no replica {node} under pid {self.proc.pid}")

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "data", tmp_path / "local.out", free_port_run(3))
    try:
        yield cluster
    finally:
        if cluster.proc.poll() is None:
            cluster.stop(signal.SIGTERM)


@pytest.mark.integration
def test_quick_start_local_cluster_then_the_client_commands(local: LocalCluster,
                                                            tmp_path: Path) -> None:
    first, second, third = local.urls
    for url in local.urls:
        assert f": {url}" in local.text()  # it told the user where its replicas are

    put = cli("put", "greeting", "hello", "--endpoint", first)
    assert put.returncode == 0 and put.stderr.startswith(b"created greeting version ")
    got = cli("get", "greeting", "--endpoint", third)  # any replica
    assert (got.returncode, got.stdout) == (0, b"hello")  # no newline added when piped
    replaced = cli("put", "greeting", "world", "--endpoint", second)
    assert replaced.returncode == 0 and replaced.stderr.startswith(b"replaced greeting")
    etag = replaced.stderr.split(b"version ")[1].strip().decode()

    stale = cli("put", "greeting", "x", "--if-match", '"stale"', "--endpoint", first)
    assert stale.returncode == 1 and b"precondition failed" in stale.stderr
    exists = cli("put", "greeting", "x", "--create-only", "--endpoint", first)
    assert exists.returncode == 1 and b"precondition failed" in exists.stderr
    # the version as printed, pasted into a shell, which strips its quotes
    cas = cli("put", "greeting", "cas", "--if-match", etag.strip('"'), "--endpoint", third)
    assert cas.returncode == 0, cas.stderr
    got = cli("get", "greeting", env={"QUORUMKV_ENDPOINT": second})
    assert got.stdout == b"cas" and got.stderr.startswith(b"greeting version ")
    current = got.stderr.split(b"version ")[1].strip().decode()
    # a conditional read: nothing while it is still at the version, else the value
    unchanged = cli("get", "greeting", "--if-none-match", current.strip('"'), "--endpoint", first)
    assert (unchanged.returncode, unchanged.stdout) == (1, b"")
    assert f"not modified, still version {current}".encode() in unchanged.stderr
    changed = cli("get", "greeting", "--if-none-match", etag, "--endpoint", first)
    assert (changed.returncode, changed.stdout) == (0, b"cas")
    assert cli("get", "greeting", "--if-match", current, "--endpoint", third).stdout == b"cas"
    moved = cli("get", "greeting", "--if-match", etag, "--endpoint", third)
    assert moved.returncode == 1 and b"precondition failed" in moved.stderr

    for key in (".", ".."):  # keys like any other, though URLs resolve such segments away
        assert cli("put", key, f"dots {key}", "--endpoint", first).returncode == 0
    assert cli("get", "..", "--endpoint", second).stdout == b"dots .."
    assert cli("get", ".", "--endpoint", third).stdout == b"dots ."

    blob = bytes(range(256)) * 4
    assert cli("put", "blob", "-", "--endpoint", second, stdin=blob).returncode == 0
    assert cli("get", "blob", "--endpoint", first).stdout == blob
    latin1 = "caf\udce9"  # the shell's bytes b"caf\xe9" (not UTF-8), as Python sees them
    assert cli("put", "latin-1", latin1, "--endpoint", first).returncode == 0
    assert cli("get", "latin-1", "--endpoint", third).stdout == b"caf\xe9"
    # an endpoint with a wrong path reaches no key route: an error, never "not found"
    for command in (["get", "blob"], ["delete", "blob"]):
        wrong = cli(*command, "--endpoint", first + "/prefix")
        assert wrong.returncode == 4 and b"404 unknown_path" in wrong.stderr, wrong.stderr
    assert cli("get", "blob", "--endpoint", second).stdout == blob

    assert cli("delete", "greeting", "--endpoint", second).returncode == 0
    missing = cli("get", "greeting", "--endpoint", first)
    assert (missing.returncode, missing.stdout) == (1, b"")
    assert b"greeting: not found" in missing.stderr
    assert cli("delete", "greeting", "--endpoint", third).returncode == 1

    # as the README says: kill -9 one replica and keep writing, through the others
    os.kill(local.replica_pid("1"), signal.SIGKILL)
    assert cli("put", "after-kill", "x", "--endpoint", first).returncode == 0
    assert cli("get", "after-kill", "--endpoint", third).stdout == b"x"
    assert "replica 1 exited (status -9); the others go on" in local.text()

    # Ctrl-C stops every replica; started again on the same data, nothing is lost
    assert local.stop() == 0
    for url in local.urls:
        assert cli("get", "blob", "--endpoint", url, "--timeout", "2").returncode == 3
    again = LocalCluster(tmp_path / "data", tmp_path / "again.out",
                         int(first.rsplit(":", 1)[1]))
    try:
        assert cli("get", "blob", "--endpoint", third).stdout == blob
        assert cli("get", "greeting", "--endpoint", second).returncode == 1
    finally:
        assert again.stop(signal.SIGTERM) == 0


def test_local_on_a_port_in_use_says_so_and_starts_nothing(tmp_path: Path) -> None:
    """Found before any replica starts: otherwise whatever holds the port (say, another
    `quorumkv local`) would answer the readiness checks, and this one report it ready."""
    base = free_port_run(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        run = subprocess.run([*QUORUMKV, "local", "--replicas", "3", "--base-port", str(base),
                              "--data-dir", str(tmp_path / "data")], capture_output=True,
                             timeout=60, check=False)
    assert run.returncode == 1 and b"Traceback" not in run.stderr
    assert f"port {base + 1} of 127.0.0.1 is in use".encode() in run.stderr
    assert b"ready" not in run.stdout and not (tmp_path / "data").exists()


@pytest.mark.integration
def test_a_replica_that_cannot_listen_says_why_in_one_line(tmp_path: Path) -> None:
    port = free_port(["127.0.0.1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = cli("serve", "--node-id", "0", "--listen", f"127.0.0.1:{port}",
                  "--data-dir", str(tmp_path / "data"))
    errors = [line for line in run.stderr.splitlines() if b'"level":"error"' in line]
    assert run.returncode == 5 and b"Traceback" not in run.stderr, run.stderr
    assert len(errors) == 1 and b'"msg":"cannot listen"' in errors[0], run.stderr
    assert not (tmp_path / "data").exists()  # found before any state was made


def test_an_unreachable_endpoint_is_status_3_with_the_reason() -> None:
    url = f"http://127.0.0.1:{free_port(['127.0.0.1'])}"
    run = cli("get", "k", "--endpoint", url, "--timeout", "2")
    assert run.returncode == 3 and f"cannot reach {url}".encode() in run.stderr


class Bad(NamedTuple):
    args: list[str]
    message: str
    env: dict[str, str] = {}  # noqa: RUF012 - never mutated


BAD_FLAGS = [
    Bad(["serve", "--data-dir", "{d}"], "--node-id (or QUORUMKV_NODE_ID) is required"),
    Bad(["serve", "--node-id", "0"], "--data-dir (or QUORUMKV_DATA_DIR) is required"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--listen", "7000"],
        "--listen must be HOST:PORT, got '7000'"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--peer", "0"],
        "a peer must be ID=URL, got '0'"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--peer", "0=127.0.0.1:7000"],
        "peer 0: '127.0.0.1:7000' is not an http(s) URL"),
    Bad(["serve", "--node-id", "3", "--data-dir", "{d}", "--peer", "0=http://127.0.0.1:7000"],
        "--node-id '3' is not among the peers (0)"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--request-timeout", "0"],
        "--request-timeout must be a positive number, got 0.0"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--request-timeout", "nan"],
        "--request-timeout must be a positive number, got nan"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--tombstone-ttl", "inf"],
        "--tombstone-ttl must be a positive number, got inf"),
    Bad(["serve", "--node-id", "a,b", "--data-dir", "{d}"], "--node-id: 'a,b' is not a node id"),
    Bad(["serve", "--node-id", 'a"b', "--data-dir", "{d}"], "--node-id: 'a\"b' is not a node id"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--peer", "0=http://[::1"],
        "peer 0: 'http://[::1' is not a valid URL"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--peer", "0=http://127.0.0.1:99999"],
        "peer 0: 'http://127.0.0.1:99999' is not a valid URL"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--peer", "0=http://h:7000",
         "--peer", "1 2=http://h:7001"], "a peer's id: '1 2' is not a node id"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}"],
        "argument --request-timeout: invalid float value: 'soon'",
        {"QUORUMKV_REQUEST_TIMEOUT": "soon"}),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}", "--log-level", "LOUD"],
        "invalid choice: 'LOUD'"),
    Bad(["serve", "--node-id", "0", "--data-dir", "{d}"],
        "--log-level (or QUORUMKV_LOG_LEVEL) must be one of DEBUG, INFO, WARNING, ERROR",
        {"QUORUMKV_LOG_LEVEL": "loud"}),
    Bad(["local", "--replicas", "10", "--data-dir", "{d}"],
        "--replicas must be between 1 and 9"),
    Bad(["local", "--base-port", "80", "--data-dir", "{d}"], "--base-port must leave room"),
    Bad(["put", "k"], "the following arguments are required: value"),
    Bad(["get", "k", "--endpoint", "127.0.0.1:7000"],
        "--endpoint: '127.0.0.1:7000' is not an http(s) URL"),
    Bad(["get", "k"], "--endpoint: 'localhost' is not an http(s) URL",
        {"QUORUMKV_ENDPOINT": "localhost"}),
    Bad(["get", "k", "--timeout", "0"], "--timeout must be a positive number, got 0.0"),
    Bad(["get", "k", "--timeout", "inf"], "--timeout must be a positive number, got inf"),
    Bad(["get", "k", "--endpoint", "http://127.0.0.1:abc"],
        "--endpoint: 'http://127.0.0.1:abc' is not a valid URL"),
    Bad(["get", "k", "--endpoint", "http://127.0.0.1:7000?x=1"],
        "--endpoint: 'http://127.0.0.1:7000?x=1' has a query or fragment"),
    Bad(["get", "k\udcff"], "the key 'k\\udcff' is not valid UTF-8"),
    Bad(["get", "k", "--timeout", "soon"], "invalid float value: 'soon'"),
    Bad(["get", "k", "--if-match", "1", "--if-none-match", "1"],
        "argument --if-none-match: not allowed with argument --if-match"),
    Bad(["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("bad", BAD_FLAGS, ids=[bad.message for bad in BAD_FLAGS])
def test_a_bad_flag_is_refused_with_a_clear_message_and_touches_nothing(
        bad: Bad, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run = cli(*(arg.format(d=data_dir) for arg in bad.args), env=bad.env)
    assert run.returncode == 2
    assert bad.message in run.stderr.decode(), run.stderr.decode()
    assert b"Traceback" not in run.stderr
    assert not data_dir.exists()


def test_a_token_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"tok\xe9n")
    run = cli("serve", "--node-id", "0", "--data-dir", str(tmp_path / "data"),
              "--auth-token-file", str(token))
    assert run.returncode == 2 and b"Traceback" not in run.stderr
    assert f"the auth token file {token} is not UTF-8 text".encode() in run.stderr
    assert not (tmp_path / "data").exists()


def test_a_data_directory_it_cannot_use_is_status_3_with_the_reason(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"precious")
    run = cli("serve", "--node-id", "0", "--data-dir", str(not_a_dir),
              "--listen", f"127.0.0.1:{free_port(['127.0.0.1'])}")
    assert run.returncode == 3 and b"Traceback" not in run.stderr
    assert b'"msg":"cannot start on this data directory"' in run.stderr
    assert b"File exists" in run.stderr and not_a_dir.read_bytes() == b"precious"
