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
    assert cli("get", "greeting", env={"QUORUMKV_ENDPOINT": second}).stdout == b"cas"

    for key in (".", ".."):  # keys like any other, though URLs resolve such segments away
        assert cli("put", key, f"dots {key}", "--endpoint", first).returncode == 0
    assert cli("get", "..", "--endpoint", second).stdout == b"dots .."
    assert cli("get", ".", "--endpoint", third).stdout == b"dots ."

    blob = bytes(range(256)) * 4
    assert cli("put", "blob", "-", "--endpoint", second, stdin=blob).returncode == 0
    assert cli("get", "blob", "--endpoint", first).stdout == blob

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


@pytest.mark.integration
def test_local_says_which_replica_could_not_start_and_stops_the_others(tmp_path: Path) -> None:
    base = free_port_run(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        started = time.monotonic()
        run = subprocess.run([*QUORUMKV, "local", "--replicas", "3", "--base-port", str(base),
                              "--data-dir", str(tmp_path)], capture_output=True, timeout=60,
                             check=False)
    assert run.returncode == 1 and time.monotonic() - started < 30
    assert b'"msg":"cannot listen"' in run.stderr and b"Traceback" not in run.stderr
    assert b"replica 1 (status 5) could not start" in run.stderr
    for port in (base, base + 2):  # the others were stopped, not left behind
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


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
        "must be positive"),
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
    Bad(["get", "k", "--timeout", "0"], "--timeout must be positive"),
    Bad(["get", "k", "--timeout", "soon"], "invalid float value: 'soon'"),
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
